"""Whole-volume prediction: overlapping windows, batched and blended with Gaussian weights on the network's
device (CPU or CUDA), for validation during training and for ``voxseg predict``.

- :func:`sliding_window_predict`: arrays in, arrays out, for any ``predictor`` callable. The input volume,
  the batches of windows and the blending accumulators (probability sums and weight sums) live on
  ``device``; only the blended result comes back, as a numpy array.
- :func:`predict_volume`: a planned network over one preprocessed case: its input (:func:`plan_input`, the
  same function the training loader uses), its backend and precision (:mod:`voxseg.infer.backends`: PyTorch
  or OpenVINO), the window, overlap and batch of ``plan.inference``.
- :func:`probabilities_to_labels`: probabilities to consecutive class labels.

The window grid and the Gaussian weights are in :mod:`voxseg.infer.windows`.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from voxseg.config import RunPlan
from voxseg.data.arrays import tensor_view
from voxseg.data.labels import regions_to_labels
from voxseg.data.network_input import network_input
from voxseg.infer.backends import InferenceBackend, inference_precision
from voxseg.infer.windows import gaussian_importance_map, window_grid

__all__ = ["sliding_window_predict", "plan_input", "predict_volume", "probabilities_to_labels"]


def sliding_window_predict(
    image: np.ndarray,
    predictor: Callable[[torch.Tensor], torch.Tensor],
    patch_size: tuple[int, ...],
    num_outputs: int,
    overlap: float = 0.5,
    batch_size: int = 2,
    gaussian: bool = True,
    activation: str = "softmax",
    progress: Callable[[int], None] | None = None,
    device: torch.device | str | None = None,
    windows: list[tuple[int, ...]] | None = None,
) -> np.ndarray:
    """Predict a whole volume by blending overlapping windows.

    Args:
        image: ``(C, *spatial)`` float32 input; spatial is ``(Z, Y, X)`` or ``(Y, X)`` and matches
            ``len(patch_size)``. Axes shorter than the window are zero-padded (then cropped back).
        predictor: maps a ``(B, C, *patch_size)`` float32 tensor on ``device`` to ``(B, num_outputs,
            *patch_size)`` logits (e.g. a network in eval mode on ``device``, possibly under autocast);
            outputs elsewhere are moved to ``device``.
        patch_size: window size in voxels.
        num_outputs: number of output channels of ``predictor``.
        overlap: fraction of overlap between neighbouring windows, in ``[0, 1)``.
        batch_size: windows per forward pass.
        gaussian: weight voxels by :func:`~voxseg.infer.windows.gaussian_importance_map` (else uniform).
        activation: ``"softmax"``, ``"sigmoid"`` or ``"none"``, applied per window before blending.
        progress: called with the number of windows just processed (for a progress bar).
        device: where the volume, the windows and the blending live (default: the CPU). On CUDA this holds
            the padded input and ``num_outputs + 1`` float32 volumes of accumulators in GPU memory.
        windows: predict only these window starts (voxels, e.g. a subset of the
            :func:`~voxseg.infer.windows.window_grid` product); voxels no window covers come back 0.

    Returns:
        ``(num_outputs, *spatial)`` float32 numpy probabilities (or blended logits for ``"none"``).
    """
    device = torch.device(device if device is not None else "cpu")
    spatial = image.shape[1:]
    if len(spatial) != len(patch_size):
        raise ValueError(f"image spatial dims {spatial} do not match patch {patch_size}")
    pad = [(0, 0)] + [(0, max(p - s, 0)) for s, p in zip(spatial, patch_size)]
    padded = np.pad(image, pad) if any(p[1] for p in pad) else image
    pshape = padded.shape[1:]
    subset = windows is not None
    windows = list(windows) if subset else list(itertools.product(*window_grid(spatial, patch_size, overlap)))
    weight = gaussian_importance_map(tuple(patch_size)) if gaussian else np.ones(patch_size, np.float32)
    weight_t = torch.from_numpy(np.array(weight)).to(device)
    accum = torch.zeros((num_outputs, *pshape), dtype=torch.float32, device=device)
    norm = torch.zeros(pshape, dtype=torch.float32, device=device)
    # Only read (windows are stacked copies); on the CPU a view of the array, elsewhere one transfer.
    source = tensor_view(np.ascontiguousarray(padded, dtype=np.float32)).to(device)
    for first in range(0, len(windows), batch_size):
        chunk = windows[first:first + batch_size]
        slices = [tuple(slice(st, st + p) for st, p in zip(start, patch_size)) for start in chunk]
        batch = torch.stack([source[(slice(None),) + sl] for sl in slices])
        with torch.no_grad():
            out = predictor(batch).float().to(device)
        if activation == "softmax":
            out = torch.softmax(out, dim=1)
        elif activation == "sigmoid":
            out = torch.sigmoid(out)
        for k, sl in enumerate(slices):
            accum[(slice(None),) + sl] += out[k] * weight_t
            norm[sl] += weight_t
        if progress is not None:
            progress(len(chunk))
    accum /= torch.where(norm > 0, norm, torch.ones_like(norm)) if subset else norm
    crop = (slice(None),) + tuple(slice(0, s) for s in spatial)
    return accum[crop].cpu().numpy()


def plan_input(image: np.ndarray, plan: RunPlan) -> np.ndarray:
    """What the plan's network sees of a preprocessed ``(C, Z, Y, X)`` case (all the dataset's channels): the
    channel subset and, for a 2.5-D plan, each slice's neighbours stacked as channels, through
    :func:`voxseg.data.network_input.network_input`, as the training loader builds its patches.

    Returns:
        ``(C' * k, Z, Y, X)`` (``k`` = ``plan.train.slices`` for 2.5-D, else 1).
    """
    channels = plan.channel_indices if plan.train.channels else None
    slices = plan.train.slices if plan.train.mode == "2.5d" else 1
    return network_input(image, channels, slices)


def _model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def predict_volume(model: torch.nn.Module, plan: RunPlan, image: np.ndarray, device: torch.device | None = None,
                   progress: Callable[[int], None] | None = None, backend: InferenceBackend | None = None,
                   cache_dir: Path | None = None, windows: list[tuple[int, ...]] | None = None) -> np.ndarray:
    """Probabilities for one preprocessed case.

    Args:
        model: the plan's network in eval mode, on ``device``.
        plan: its run plan (input channels, window, overlap, windows per pass, precision).
        image: ``(C, Z, Y, X)`` float32 numpy, preprocessed (all the dataset's channels).
        device: where the network runs and the windows are blended (default: the model's device).
        progress: called with the number of windows just predicted.
        backend: what runs the network on each batch of windows, at which precision
            (:class:`~voxseg.infer.backends.InferenceBackend`; keep one object for all cases so a network is
            converted and compiled once); default: PyTorch at the run's ``amp``.
        cache_dir: the run (or fold) folder the network comes from, where OpenVINO keeps its converted network
            (``None``: in memory only).
        windows: predict only these window starts ``(z, y, x)`` (see :func:`sliding_window_predict`).

    Returns:
        ``(K, Z, Y, X)`` float32 numpy: softmax class probabilities, or sigmoid region probabilities
        (``plan.scheme.regions`` order; WT, TC, ET for BraTS) for region schemes.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    patch = tuple(plan.train.patch_size)
    two_d = plan.network.spatial_dims == 2
    image = plan_input(image, plan)
    window = patch[1:] if two_d else patch
    backend = backend or InferenceBackend("torch")
    net = backend.predictor(model, plan.train.amp, (plan.inference.batch_size, image.shape[0], *window), device,
                            cache_dir)

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        if two_d:  # (B, C, 1, Y, X) -> (B, C, Y, X) and back
            batch = batch[:, :, 0]
        out = net(batch)
        return out[:, :, None] if two_d else out

    return sliding_window_predict(image, predictor, patch, plan.num_outputs, overlap=plan.inference.overlap,
                                  batch_size=plan.inference.batch_size, gaussian=plan.inference.gaussian,
                                  activation=plan.activation, progress=progress, device=device,
                                  windows=windows)


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
