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


@functools.lru_cache(maxsize=4)
def bf16_is_faster(device_type: str, threads: int) -> bool:
    """Whether bf16 autocast beats float32 by more than 10% on this device type and thread count.

    Times one 3-D conv forward+backward in fp32 and under bf16 autocast, twice each, keeping the faster
    run of each (about half a second; cached per process, device type and thread count). Autograd is
    switched on for the probe, so it works under ``torch.no_grad()`` and ``torch.inference_mode()``.
    bf16 is much faster on some AVX-512-bf16 CPUs and slower on others with the same flags, so the choice is
    timed on the machine in use, not assumed.

    Args:
        device_type: ``"cpu"`` or ``"cuda"``.
        threads: torch's intra-op thread count (part of the cache key).
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
    return "bf16" if bf16_is_faster(device.type, torch.get_num_threads()) else "none"


def autocast_context(amp: str, device: torch.device):
    """Autocast for ``amp`` (``"bf16"``, ``"fp16"`` on CUDA only, ``"none"``, or ``"auto"``)."""
    amp = resolve_amp(amp, device)
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if amp == "fp16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()
