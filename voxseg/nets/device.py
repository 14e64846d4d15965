"""Where a network runs and at which precision: the device a ``--device`` name means, and the mixed precision
``amp = "auto"`` resolves to there (fp16 on CUDA, bf16 on a CPU where it measures faster)."""
from __future__ import annotations

import contextlib
import functools
import time

import torch

from voxseg.errors import InputError

__all__ = ["resolve_device", "resolve_amp", "autocast_context", "bf16_is_faster"]

DEVICE_NAMES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device a ``--device`` name means.

    Args:
        name: ``"auto"`` (CUDA when torch sees a GPU, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``;
            a ``torch.device`` is checked the same way.

    Raises:
        InputError: an unknown name, or CUDA asked for where torch sees no GPU (one line naming ``--device``).
    """
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError("--device", f"{text} was asked for, but torch sees no CUDA GPU on this machine; "
                                         "use --device auto or --device cpu")
        device = torch.device(text)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError("--device", f"{text} was asked for, but this machine has {torch.cuda.device_count()} "
                                         "GPU(s)")
        return device
    raise InputError("--device", f"must be one of {', '.join(DEVICE_NAMES)} (or cuda:N), got {name!r}")


_PROBE_ROUNDS = 3  # timed passes per precision, after one untimed warm-up pass each


@functools.lru_cache(maxsize=4)
def bf16_is_faster(device_type: str, threads: int) -> bool:
    """Whether bf16 autocast beats float32 by more than 10% on this device type and thread count.

    Times a 3-D convolution's forward and backward pass (16 channels, batch 2, 32^3 voxels: the first stage of
    the CPU U-Net) in fp32 and under bf16 autocast. Each precision first runs once untimed (allocation, kernel
    choice), then the two alternate for :data:`_PROBE_ROUNDS` rounds and the fastest pass of each is compared,
    so that one pass slowed by a busy moment does not decide (about 0.1 s on a 2-core CPU; cached per process, device type and
    thread count). Autograd is switched on for the probe, so it works under ``torch.no_grad()`` and
    ``torch.inference_mode()``. bf16 is much faster on some AVX-512-bf16 CPUs and slower on others with the
    same flags, so the choice is timed on the machine in use, not assumed.

    Args:
        device_type: ``"cpu"`` or ``"cuda"``.
        threads: torch's intra-op thread count (part of the cache key).
    """
    timings: dict[bool, list[float]] = {False: [], True: []}
    # The probe needs autograd even when the caller predicts under no_grad / inference_mode.
    with torch.inference_mode(False), torch.enable_grad():
        conv = torch.nn.Conv3d(16, 16, 3, padding=1).to(device_type)
        x = torch.randn(2, 16, 32, 32, 32, device=device_type, requires_grad=True)
        for use_bf16 in (False, True):  # untimed warm-up of each precision
            _probe_pass(conv, x, device_type, use_bf16)
        for _ in range(_PROBE_ROUNDS):
            for use_bf16 in (False, True):
                timings[use_bf16].append(_probe_pass(conv, x, device_type, use_bf16))
    return min(timings[True]) < 0.9 * min(timings[False])


def _probe_pass(conv: torch.nn.Module, x: torch.Tensor, device_type: str, use_bf16: bool) -> float:
    """Seconds of one forward and backward pass of ``conv`` on ``x``, under bf16 autocast or not."""
    start = time.perf_counter()
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=use_bf16):
        y = conv(x)
    y.float().sum().backward()
    if device_type == "cuda":
        torch.cuda.synchronize()
    conv.zero_grad(set_to_none=True)
    x.grad = None
    return time.perf_counter() - start


def resolve_amp(amp: str, device: torch.device) -> str:
    """``"auto"`` -> ``"fp16"`` on CUDA, ``"bf16"`` on a CPU where it measures faster, else ``"none"``."""
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "fp16"
    return "bf16" if bf16_is_faster(device.type, torch.get_num_threads()) else "none"


def autocast_context(amp: str, device: torch.device):
    """Autocast for ``amp`` (``"bf16"``, ``"fp16"`` on CUDA only, ``"none"``, or ``"auto"``)."""
    amp = resolve_amp(amp, device)
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if amp == "fp16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()
