"""Time a training step on this machine, and a patch that a time budget can train often enough.

A budgeted run on a CPU can spend its minutes on too few iterations to learn. :func:`fit_patch_to_time_budget`
times a training step of the planned patch on the machine in use and shrinks the patch, the longest axis first,
until the budget allows a target number of iterations (what that buys: ``benchmarks/time_budget.py`` and
docs/benchmarks.md).
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from voxseg.nets import autocast_context
from voxseg.nets import shrink_longest_axis, smallest_patch_sides

__all__ = ["measure_step_seconds", "fit_patch_to_time_budget"]


def measure_step_seconds(model: nn.Module, input_shape: Sequence[int], batch_size: int, amp: str = "auto",
                         device: torch.device | str = "cpu", repeats: int = 5,
                         timer: Callable[[], float] = time.perf_counter) -> float:
    """Median wall time, in seconds, of one forward + backward pass at the run's precision (the first pass
    excluded).

    A copy of ``model`` runs on seeded random input inside a forked RNG, so the model's weights and the
    global RNG state are left alone (also with dropout, and with ``amp="auto"``'s first bf16 probe). The first pass (allocation, kernel choice) is not timed. Data loading and the optimiser step
    are not included: the real iteration is somewhat slower (the training loop reports its own rate).

    Args:
        model: the network.
        input_shape: ``(C, Z, Y, X)`` (``(C, Y, X)`` for a 2-D network), voxels.
        batch_size: samples per step.
        amp: ``"auto"``, ``"bf16"``, ``"fp16"`` or ``"none"`` (see ``voxseg.nets.resolve_amp``).
        device: where to run.
        repeats: timed passes; their median is returned, so that one pass slowed by a busy machine does not
            decide the plan.
        timer: the clock read, in seconds (a test passes a fake one).
    """
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return _median_step(copy.deepcopy(model).to(device).train(), input_shape, batch_size, amp, device, repeats,
                            timer)


def _median_step(net: nn.Module, input_shape: Sequence[int], batch_size: int, amp: str, device: torch.device,
                 repeats: int, timer: Callable[[], float]) -> float:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((batch_size, *input_shape), generator=generator).to(device)
    times = []
    for i in range(repeats + 1):
        start = timer()
        with autocast_context(amp, device):
            out = net(x)
        outs = out if isinstance(out, (list, tuple)) else [out]  # deep supervision: one output per scale
        sum(o.float().mean() for o in outs).backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        net.zero_grad(set_to_none=True)
        if i:
            times.append(timer() - start)
    return float(np.median(times))


def fit_patch_to_time_budget(model: nn.Module, in_channels: int, patch: Sequence[int], batch_size: int,
                             budget_seconds: float, min_iterations: int, divisor: Sequence[int], amp: str = "auto",
                             device: torch.device | str = "cpu", min_side: int = 32,
                             measure: Callable[[list[int]], float] | None = None) -> tuple[list[int], float]:
    """The largest patch, shrunk greedily from ``patch``, whose measured step lets ``budget_seconds`` hold at
    least ``min_iterations`` steps.

    The longest axis shrinks first, one ``divisor`` step at a time, down to ``min_side`` voxels, and never
    below two divisors (the deepest stage keeps two voxels along every axis); each candidate is timed.
    When even the smallest patch is too slow, the smallest patch is returned.

    Args:
        model: the network.
        in_channels: network input channels.
        patch: ``[pz, py, px]``; ``[1, py, px]`` for a 2-D network.
        batch_size: samples per step (unchanged).
        budget_seconds: the training time budget.
        min_iterations: steps the budget should hold.
        divisor: the network's size divisor per spatial axis.
        amp / device: as in :func:`measure_step_seconds`.
        min_side: smallest side a shrunk axis may reach.
        measure: spatial patch -> seconds per step (default: :func:`measure_step_seconds` of ``model``).

    Returns:
        ``(patch, seconds_per_step)`` with the measured step of the returned patch.
    """
    two_d = len(divisor) == 2
    spatial = list(patch[1:] if two_d else patch)
    divisor = list(divisor)
    if measure is None:
        def measure(side: list[int]) -> float:
            return measure_step_seconds(model, (in_channels, *side), batch_size, amp, device)

    floor = smallest_patch_sides(divisor, min_side)
    seconds = measure(list(spatial))
    while budget_seconds / seconds < min_iterations and shrink_longest_axis(spatial, divisor, floor):
        seconds = measure(list(spatial))
    return ([1, *spatial] if two_d else spatial), seconds
