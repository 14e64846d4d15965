"""Fitting a planned patch (and batch) to what the machine has: the memory free, and the time budget.

Each function returns a new plan; the one passed in is not changed.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable

import torch

from voxseg.nets import resolve_device
from voxseg.config import RunPlan
from voxseg.plan.memory import FRAMEWORK_BYTES, GIB, available_memory, estimate_training_memory, fit_patch_to_memory
from voxseg.plan.timing import fit_patch_to_time_budget
from voxseg.train.distributed import rank_and_world
from voxseg.train.validation import VALIDATION_SHARE

__all__ = ["fit_memory", "fit_time"]


def _with_train(plan: RunPlan, **changes) -> RunPlan:
    return dataclasses.replace(plan, train=dataclasses.replace(plan.train, **changes))


def fit_memory(plan: RunPlan, model: torch.nn.Module, log: Callable[[str], None], memory_gib: float | None = None,
               user_patch: bool = False, hint: str = "a smaller --patch or --batch-size") -> RunPlan:
    """The plan with its patch (then batch) shrunk until a training step fits the memory budget.

    The budget is ``memory_gib`` (GiB) when given, else 80% of the memory free (RAM shared by the processes
    torchrun starts on this machine, or the GPU's) plus the framework this process already holds. A patch the
    user chose (``user_patch``), or minicubes, are not shrunk: a warning when they need more than the budget,
    refused when ``memory_gib`` was given or they need more than all the memory free. ``hint``: what the user
    can change, in those messages. ``model``: the network the plan builds.

    Raises:
        ValueError: the patch cannot be fitted, or a user's patch is refused (one line).
    """
    device_type = resolve_device(plan.train.device).type
    free = available_memory(device_type)
    if memory_gib is not None:
        budget, source = int(memory_gib * GIB), f"--memory {memory_gib:g} GiB"
    else:
        if free is None:
            return plan
        # Processes on this machine share its RAM; torchrun says how many in LOCAL_WORLD_SIZE.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", rank_and_world()[1])) if device_type == "cpu" else 1
        # This process (torch loaded) already runs: the framework share of an estimate is not new memory.
        budget = int(0.8 * free / max(local, 1)) + (FRAMEWORK_BYTES if device_type == "cpu" else 0)
        source = f"the {budget / GIB:.1f} GiB budget (80% of the memory free{' / processes' if local > 1 else ''})"
    t = plan.train
    if user_patch or t.minicube:
        _check_user_patch(plan, model, budget, source, free, memory_gib is not None, hint, log)
        return plan
    patch, batch, estimate = fit_patch_to_memory(model, plan.input_channels, t.patch_size, t.batch_size, budget,
                                                 model.size_divisor, t.optimizer, device_type)
    if (patch, batch) != (t.patch_size, t.batch_size):
        log(f"memory: patch {t.patch_size} with batch {t.batch_size} would need more than {source}: "
            f"planned patch {patch}, batch {batch} (about {estimate})")
        return _with_train(plan, patch_size=patch, batch_size=batch)
    log(f"memory: training needs about {estimate} ({source.replace('the ', '', 1)})")
    return plan


def _check_user_patch(plan: RunPlan, model: torch.nn.Module, budget: int, source: str, free: int | None,
                      strict: bool, hint: str, log: Callable[[str], None]) -> None:
    """Warn when the user's patch and batch need more than ``budget`` bytes (``source`` names it); refuse them
    (ValueError) when ``strict`` (``--memory`` given) or they need more than all the ``free`` bytes."""
    device_type = resolve_device(plan.train.device).type
    t = plan.train
    spatial = t.patch_size[-plan.network.spatial_dims:]
    estimate = estimate_training_memory(model, (plan.input_channels, *spatial), t.batch_size, t.optimizer,
                                        device_type)
    if estimate.total <= budget:
        return
    message = f"patch {t.patch_size} with batch {t.batch_size} needs about {estimate} to train, more than {source}"
    if strict:
        raise ValueError(message)
    if free is not None and estimate.total > free + (FRAMEWORK_BYTES if device_type == "cpu" else 0):
        # More than all the memory free: it would only be killed, after preprocessing, mid-step.
        planned = " (or leave --patch out: voxseg plans one that fits)" if "--patch" in hint else ""
        raise ValueError(f"{message}, and more than all {free / GIB:.1f} GiB free: give {hint}{planned}")
    log(f"warning: {message}: it may stop with out-of-memory ({hint} fits)")


EPOCHS_MARGIN = 1.5
"""With a time budget given alone, the planned epochs hold this many times the steps timed to fit the budget (a
step measured slower than training runs must not let the epochs end the run first)."""


def fit_time(plan: RunPlan, model: torch.nn.Module, min_iterations: int, log: Callable[[str], None],
             epochs_from_budget: bool = False) -> RunPlan:
    """The plan with its patch shrunk until the time budget (``plan.train.time_budget_minutes``) holds
    ``min_iterations`` steps timed here with the threads training will use (the memory fit comes first: a smaller
    patch needs less), or all the steps the epochs allow when those are fewer. With validation cases
    (``val_fraction`` > 0) the steps get the budget less validation's share
    (:data:`voxseg.train.validation.VALIDATION_SHARE`), which training keeps to. The measured seconds per step
    are kept as ``train.planned_step_seconds``, ``min_iterations`` as ``train.planned_min_iterations`` (training
    compares its first epoch with them and may re-plan the patch, :func:`voxseg.train.phases.replanned_patch`).
    ``model``: the network the plan builds; one line says what was measured. ``epochs_from_budget`` (the budget given without
    ``--epochs``): the epochs rise to :data:`EPOCHS_MARGIN` times the steps the budget holds, so that the budget
    ends the run."""
    t = plan.train
    min_iterations = min(min_iterations, t.epochs * t.iterations_per_epoch)
    device = resolve_device(t.device)
    threads = torch.get_num_threads()
    share = 1.0 - VALIDATION_SHARE if t.val_fraction > 0 else 1.0
    train_seconds = 60.0 * t.time_budget_minutes * share
    if t.num_threads:  # time with the threads training will use
        torch.set_num_threads(t.num_threads)
    try:
        patch, seconds = fit_patch_to_time_budget(model, plan.input_channels, t.patch_size, t.batch_size,
                                                  train_seconds, min_iterations, model.size_divisor, t.amp, device)
    finally:
        torch.set_num_threads(threads)
    steps = int(train_seconds / seconds)
    kept = f", {100 * (1 - share):.0f}% of the budget kept for validation" if share < 1 else ""
    if epochs_from_budget:
        epochs = max(t.epochs, math.ceil(EPOCHS_MARGIN * steps / t.iterations_per_epoch))
        if epochs != t.epochs:
            kept += f"; {epochs} epochs, so that the budget ends the run"
            plan = _with_train(plan, epochs=epochs)
    if patch != t.patch_size:
        log(f"time: a step at patch {t.patch_size} would leave the {t.time_budget_minutes:g}-minute budget fewer than "
            f"{min_iterations} iterations: planned patch {patch} ({seconds:.2g} s per step measured here, about "
            f"{steps} steps{kept}; --min-iterations sets the target, --patch overrides)")
        return _with_train(plan, patch_size=patch, planned_step_seconds=seconds, planned_min_iterations=min_iterations)
    log(f"time: {seconds:.2g} s per step at patch {patch} (measured here): about {steps} steps in the "
        f"{t.time_budget_minutes:g}-minute budget{kept}")
    return _with_train(plan, planned_step_seconds=seconds, planned_min_iterations=min_iterations)
