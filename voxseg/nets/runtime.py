"""A planned network at run time: build it from a run plan, choose its precision on this device, and run it
over a whole preprocessed case (the sliding window of :mod:`voxseg.data.tiling`). Shared by validation during
training and by ``voxseg predict``; ``voxseg.infer`` re-exports it.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import math
import time
from typing import Callable

import numpy as np
import torch

from voxseg.data.labels import regions_to_labels
from voxseg.data.tiling import sliding_window_predict
from voxseg.nets.registry import build_network
from voxseg.config import RunPlan

__all__ = ["build_model", "resolve_amp", "autocast_context", "inference_precision", "network_input",
           "predict_volume", "probabilities_to_labels"]


def build_model(plan: RunPlan) -> torch.nn.Module:
    """The network the plan describes, randomly initialised."""
    return build_network(plan.network.name, plan.network.spatial_dims, plan.input_channels,
                         plan.num_outputs, **plan.network.kwargs)


@functools.lru_cache(maxsize=4)
def _bf16_is_faster(device_type: str, threads: int) -> bool:
    """Time one 3-D conv forward+backward in fp32 and under bf16 autocast (~0.5 s, once per process).

    bf16 is 2.5x faster on some AVX-512-bf16 CPUs and slower on others with the same flags (measured:
    0.17 s vs 0.10 s for a 64-channel 32^3 conv here), so the choice is measured, not assumed.
    """
    timings = {}
    # The probe needs autograd even when the caller predicts under no_grad / inference_mode.
    with torch.inference_mode(False), torch.enable_grad():
        conv = torch.nn.Conv3d(32, 32, 3, padding=1)
        x = torch.randn(2, 32, 24, 24, 24)
        for use_bf16 in (False, True, False, True):
            start = time.perf_counter()
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=use_bf16):
                y = conv(x)
            y.float().sum().backward()
            elapsed = time.perf_counter() - start
            timings[use_bf16] = min(timings.get(use_bf16, elapsed), elapsed)
    return timings[True] < 0.9 * timings[False]


def resolve_amp(amp: str, device: torch.device) -> str:
    """``"auto"`` -> ``"fp16"`` on CUDA, ``"bf16"`` on a CPU where it measures faster, else ``"none"``."""
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "fp16"
    return "bf16" if _bf16_is_faster(device.type, torch.get_num_threads()) else "none"


def autocast_context(amp: str, device: torch.device):
    """Autocast for ``amp`` (``"bf16"``, ``"fp16"`` on CUDA only, ``"none"``, or ``"auto"``)."""
    amp = resolve_amp(amp, device)
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if amp == "fp16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def inference_precision(model: torch.nn.Module, amp: str, device: torch.device, window_voxels: int = 0
                        ) -> tuple[torch.nn.Module, torch.dtype, contextlib.AbstractContextManager]:
    """The network, input dtype and context to predict with at the precision ``amp`` resolves to.

    bf16 on a CPU, for a model in eval mode whose first-stage activation of one batch of windows
    (``window_voxels`` = voxels of a window times windows per pass) is large: a bf16 copy of the model, run
    without autocast, so the memory-lean path (``voxseg.nets._lean``: slabbed convolutions, in-place norms)
    serves it; autocast would take the plain path. Small activations keep autocast, which is faster there.
    Measured on 2 cores, one window (bf16 copy / autocast): U-Net base 32 at 128^3 2.25 / 2.72 s, 96^3
    0.85 / 0.91 s, 64^3 0.27 / 0.20 s; base 16 at 128^3 0.82 / 0.91 s, 96^3 0.33 / 0.29 s (fp32: 4.2 s at
    base 32, 128^3). Normalisation layers keep float32 parameters and statistics (summed in float64 on the lean
    path). Otherwise: the model itself, float32 input and :func:`autocast_context`.
    """
    if (resolve_amp(amp, device) == "bf16" and device.type == "cpu" and not model.training
            and window_voxels * _first_width(model) * 2 >= _BF16_COPY_MIN_BYTES):
        return _bf16_copy(model), torch.bfloat16, contextlib.nullcontext()
    return model, torch.float32, autocast_context(amp, device)


_BF16_COPY_MIN_BYTES = 40 * 2**20
"""bf16 bytes of the first stage's activation from which the bf16 copy beats autocast (between the 28 MB of base
16 at 96^3, slower, and the 56 MB of base 32 at 96^3, faster; :func:`inference_precision`)."""


def _first_width(model: torch.nn.Module) -> int:
    """Output channels of the model's first convolution (its full-resolution width)."""
    conv = next((m for m in model.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)), None)
    return conv.out_channels if conv is not None else 0


_FLOAT32_LAYERS = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)


def _bf16_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose weights are bf16, but for the normalisation layers: their affine parameters and
    running statistics stay float32 (torch's norms take bf16 input with float32 parameters), as autocast keeps
    them."""
    net = copy.deepcopy(model)
    for module in net.modules():
        if isinstance(module, _FLOAT32_LAYERS):
            continue
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            if tensor is not None and tensor.is_floating_point():
                tensor.data = tensor.data.to(torch.bfloat16)
    return net


def network_input(image: np.ndarray, plan: RunPlan) -> np.ndarray:
    """What the network sees of a preprocessed ``(C, Z, Y, X)`` case: the plan's channel subset and, for a
    2.5-D plan, each slice's ``k`` neighbours stacked as channels (``c * k + j`` = channel ``c`` at slice
    ``z - k//2 + j``, zeros beyond the volume), the layout ``voxseg.data.sampling.stack_neighbours`` trains on.
    """
    image = image[plan.channel_indices] if plan.train.channels else image
    if plan.train.mode != "2.5d":
        return image
    k, half = plan.train.slices, plan.train.slices // 2
    padded = np.pad(image, [(0, 0), (half, half), (0, 0), (0, 0)])
    depth = image.shape[1]
    stacked = np.stack([padded[:, j:j + depth] for j in range(k)], axis=1)  # (C, k, Z, Y, X)
    return stacked.reshape((image.shape[0] * k,) + image.shape[1:])


def predict_volume(model: torch.nn.Module, plan: RunPlan, image: np.ndarray, device: torch.device,
                   progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Probabilities for one preprocessed case.

    Args:
        image: ``(C, Z, Y, X)`` float32, preprocessed (all the dataset's channels).

    Returns:
        ``(K, Z, Y, X)`` float32: softmax class probabilities, or sigmoid region probabilities
        (``plan.scheme.regions`` order; WT, TC, ET for BraTS) for region schemes.
    """
    patch = tuple(plan.train.patch_size)
    activation = plan.activation
    two_d = plan.network.spatial_dims == 2
    image = network_input(image, plan)
    net, dtype, precision = inference_precision(model, plan.train.amp, device,
                                                math.prod(patch) * plan.inference.batch_size)

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(device, dtype)
        if two_d:  # (B, C, 1, Y, X) -> (B, C, Y, X) and back
            batch = batch[:, :, 0]
        with precision:
            out = net(batch)
        out = out.float().cpu()
        return out[:, :, None] if two_d else out

    return sliding_window_predict(image, predictor, patch, plan.num_outputs, overlap=plan.inference.overlap,
                                  batch_size=plan.inference.batch_size, gaussian=plan.inference.gaussian,
                                  activation=activation, progress=progress)


def probabilities_to_labels(probs: np.ndarray, plan: RunPlan) -> np.ndarray:
    """``(K, Z, Y, X)`` probabilities -> ``(Z, Y, X)`` consecutive class labels (uint8)."""
    scheme = plan.scheme
    if scheme.is_region_based:
        original = regions_to_labels(probs > 0.5, scheme)
        lut = {v: i for i, v in enumerate(plan.label_values)}
        out = np.zeros(original.shape, np.uint8)
        for value, index in lut.items():
            out[original == value] = index
        return out
    return np.argmax(probs, axis=0).astype(np.uint8)
