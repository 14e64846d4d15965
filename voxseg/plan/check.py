"""Checking a plan before a run folder is made (or trained): everything training will build is built once here, so
that a bad option is one line naming the run (:class:`voxseg.errors.InputError`), not a traceback after the run
folder was made."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from voxseg.config import RunPlan, TrainOptions
from voxseg.data.cache import PreparedCase
from voxseg.data.fingerprint import DatasetFingerprint
from voxseg.errors import InputError
from voxseg.io.datasets import Dataset
from voxseg.losses import build_loss
from voxseg.nets import build_model, check_spatial_size, freeze_encoder
from voxseg.plan.fit import fit_memory
from voxseg.plan.planner import plan_run
from voxseg.train.optim import build_optimizer
from voxseg.train.schedules import lr_factor

__all__ = ["check_edited_plan", "check_plan", "checked_plan"]


def checked_plan(options: TrainOptions, dataset: Dataset, label_values: list[int], prepared: list[PreparedCase],
                 log: Callable[[str], None], run_dir: Path, fingerprint: DatasetFingerprint | None = None) -> RunPlan:
    """:func:`voxseg.plan.plan_run` then :func:`check_plan`; an option that cannot be planned is one line naming
    ``run_dir``. ``options``: a :class:`voxseg.config.TrainOptions`."""
    try:
        plan, model = plan_run(options, dataset, label_values, prepared, log, fingerprint)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise _option_error(run_dir, exc) from None
    check_plan(plan, run_dir, model)
    return plan


def check_plan(plan: RunPlan, run_dir: Path, model: torch.nn.Module | None = None) -> None:
    """Build what training will build (network, loss, optimiser, schedule) and check the numbers, so that a
    bad option is one line here, before the run folder exists, not a traceback after it was made. ``model``:
    the network planning already built for this plan (a throwaway copy: frozen here to check the option)."""
    t = plan.train
    problems = [f"{flag} must be {rule}, got {value}" for flag, value, ok, rule in [
        ("--epochs", t.epochs, t.epochs >= 1, ">= 1"),
        ("--iterations", t.iterations_per_epoch, t.iterations_per_epoch >= 1, ">= 1"),
        ("--batch-size", t.batch_size, t.batch_size >= 1, ">= 1"),
        ("--lr", t.lr, t.lr is not None and t.lr > 0, "> 0"),
        ("--val-every", t.val_every, t.val_every >= 1, ">= 1"),
        ("--time-budget", t.time_budget_minutes, t.time_budget_minutes is None or t.time_budget_minutes > 0, "> 0"),
        ("--slices", t.slices, t.mode != "2.5d" or (t.slices >= 1 and t.slices % 2 == 1), "odd and >= 1"),
        ("--minicubes", t.minicube, t.minicube is None or (len(t.minicube) == 3 and min(t.minicube) >= 1),
         "3 sizes >= 1"),
        ("--minicube-context", t.minicube_context, t.minicube_context >= 0, ">= 0"),
        ("--loader-workers", t.loader_workers, t.loader_workers >= 0, ">= 0"),
        ("--swa-epochs", t.swa_epochs, t.swa_epochs >= 0, ">= 0"),
    ] if not ok]
    if problems:
        raise InputError(run_dir, "; ".join(problems))
    try:
        model = build_model(plan) if model is None else model
        if not t.patch_size or len(t.patch_size) != 3:
            raise ValueError(f"patch {t.patch_size} must be 3 sizes (Z, Y, X; 1 x Y x X for 2-D)")
        check_spatial_size(t.patch_size[-plan.network.spatial_dims:], model.size_divisor)
        if t.freeze_stages:
            try:
                freeze_encoder(model, t.freeze_stages)
            except ValueError as exc:
                raise ValueError(f"--freeze-stages {t.freeze_stages}: {exc}") from None
        build_loss(t.loss, mode=plan.activation, **t.loss_kwargs)
        build_optimizer(t.optimizer, model, t.lr, t.weight_decay, **t.optimizer_kwargs)
        lr_factor(t.schedule, 0.5, **t.schedule_kwargs)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise _option_error(run_dir, exc) from None


def check_edited_plan(plan: RunPlan, plan_path: Path, log: Callable[[str], None]) -> None:
    """What :func:`check_plan` checks, and that its patch and batch fit the memory free (a warning above 80% of
    it, refused above all of it), for a plan the user may have edited; one line naming ``plan_path``."""
    check_plan(plan, plan_path)
    try:
        fit_memory(plan, build_model(plan), log, user_patch=True,
                   hint=f"a smaller patch_size or batch_size in {plan_path.name}")
    except (ValueError, TypeError) as exc:
        raise InputError(plan_path, str(exc)) from None


def _option_error(run_dir: Path, exc: Exception) -> InputError:
    """One line for an option that cannot be trained with: the exception's own words (a KeyError's key
    without its quotes), and for a value of the wrong type, where such values come from."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    if isinstance(exc, TypeError) and ("not supported between" in text or "argument" in text):
        text += (" (a value in --net-args, --loss-args, --optimizer-args or --schedule-args has the wrong type or "
                 "name: numbers are written as numbers, e.g. alpha=0.3)")
    return InputError(run_dir, f"cannot train with these options: {text}")
