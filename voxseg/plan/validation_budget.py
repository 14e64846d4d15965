"""Validation sized to its share of a time budget, before training: how long validating the validation cases
whole would take, and the seeded, fixed subset that fits when that is too long.

The cost of a validation is its sliding-window forward passes (each case's windows at the plan's patch and
overlap, :func:`voxseg.train.validation.window_starts_of`) times the time of one forward pass per window, taken
as a third of the training step measured when planning (``train.planned_step_seconds``: a forward and a
backward pass of ``batch_size`` patches; a backward pass costs about twice a forward one), divided by the
batch. Without a measured step, one is timed here.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from voxseg.config import RunPlan
from voxseg.data.cache import PreparedCase
from voxseg.nets import build_model, resolve_device
from voxseg.plan.timing import measure_step_seconds
from voxseg.train.validation import VALIDATION_SHARE, window_starts_of

__all__ = ["MIN_VALIDATION_WINDOWS", "plan_validation", "validation_budget", "window_seconds"]

MIN_VALIDATION_WINDOWS = 4
"""Fewest windows per case a subset keeps before it drops cases instead."""


def window_seconds(plan: RunPlan, model: torch.nn.Module | None = None) -> float:
    """Seconds of one window's forward pass: a third of a training step per patch (the step measured when
    planning, else timed here on ``model`` or the plan's network)."""
    t = plan.train
    step = t.planned_step_seconds
    if not step:
        model = model if model is not None else build_model(plan)
        spatial = t.patch_size[1:] if plan.network.spatial_dims == 2 else t.patch_size
        step = measure_step_seconds(model, (plan.input_channels, *spatial), t.batch_size, t.amp,
                                    resolve_device(t.device))
    return step / (3.0 * t.batch_size)


def validation_budget(windows: list[int], per_window_s: float, share_s: float) -> tuple[int, int | None, float]:
    """The subset of validation that fits ``share_s`` seconds.

    Args:
        windows: sliding windows of each validation case.
        per_window_s: seconds of one window's forward pass.
        share_s: seconds one validation may take.

    Returns:
        ``(cases, windows per case, seconds per validation)``: every case whole (``None`` windows) when that
        fits; else every case with the windows that fit (each case's own count at most), at least
        :data:`MIN_VALIDATION_WINDOWS`; else fewer cases (at least one) with that many.
    """
    n = len(windows)
    if per_window_s * sum(windows) <= share_s:
        return n, None, per_window_s * sum(windows)
    per_case = int(share_s / (per_window_s * n))
    if per_case < MIN_VALIDATION_WINDOWS:
        n = max(1, min(n, int(share_s / (per_window_s * MIN_VALIDATION_WINDOWS))))
        per_case = max(1, int(share_s / (per_window_s * n)))
    largest = sorted(windows, reverse=True)[:n]  # the estimate holds whichever cases the seed draws
    return n, per_case, per_window_s * sum(min(per_case, w) for w in largest)


def plan_validation(plan: RunPlan, val_cases: list[PreparedCase], log: Callable[[str], None],
                    model: torch.nn.Module | None = None) -> RunPlan:
    """The plan with validation sized to :data:`~voxseg.train.validation.VALIDATION_SHARE` of its time budget
    (``train.val_cases``, ``val_windows``, ``val_seconds``), said in one line (``planner: validation: N of M
    cases, K windows each, about S s per validation (10% of the budget)``) and added to ``planner_notes``.
    Without a budget or validation cases: the plan unchanged (whole-volume validation of every case).
    ``model``: the plan's network, timed when no step was measured while planning."""
    t = plan.train
    if not t.time_budget_minutes or not val_cases:
        return plan
    windows = [len(window_starts_of(tuple(c.image.shape[1:]), plan)) for c in val_cases]
    share_s = VALIDATION_SHARE * 60.0 * t.time_budget_minutes
    cases, per_case, seconds = validation_budget(windows, window_seconds(plan, model), share_s)
    each = "whole volumes" if per_case is None else f"{per_case} windows each"
    note = (f"validation: {cases} of {len(val_cases)} cases, {each}, about {seconds:.3g} s per validation "
            f"({VALIDATION_SHARE:.0%} of the budget)")
    log(f"planner: {note}")
    subset = per_case is not None
    train = dataclasses.replace(t, val_cases=cases if subset else None, val_windows=per_case,
                                val_seconds=seconds)
    return dataclasses.replace(plan, train=train, planner_notes=[*plan.planner_notes, note])
