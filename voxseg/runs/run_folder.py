"""A run folder's life: checked before anything is written, made whole or not at all, read back to resume, trained.

Run folder layout::

    RUN/plan.json            the typed plan (channels, labels, preprocessing, network, training)
    RUN/split.json           case ids for training and validation (seeded; editable before --resume)
    RUN/dataset.json         the dataset as voxseg saw it (layout, channel order, cases)
    RUN/preprocessed/        cached preprocessed cases: CASE.image.npy (memory-mapped while training, so a
                             dataset larger than RAM trains), CASE.label.npy, CASE.json (settings, record)
    RUN/preprocessed/minicubes/  with --minicubes: each training case's cubes, cached and mapped the same way
    RUN/log.csv              one row per epoch
    RUN/checkpoint_{last,best}.pt
    RUN/training.json        one entry per finished ``voxseg train`` session: command, voxseg version, hardware

A k-fold cross-validation holds ``splits.json`` instead of ``split.json``, and one such folder per fold
(``fold_0/`` ...) that shares its root's ``preprocessed/``.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import torch

from voxseg.config import RunPlan
from voxseg.data.cache import PreparedCase, cache_stamp, cached_minicubes, prepare_cases
from voxseg.data.preprocess import LabelMapping
from voxseg.data.splits import read_split
from voxseg.errors import InputError
from voxseg.infer.model_files import CHECKPOINT_LAST
from voxseg.io.datasets import Case, Dataset
from voxseg.io.files import check_writable, save_json_atomic
from voxseg.io.validate import CaseSummary
from voxseg.nets import resolve_device
from voxseg.plan.check import checked_plan
from voxseg.plan.planner import label_names_for
from voxseg.plan.resolve import run_fingerprint
from voxseg.plan.validation_budget import plan_validation
from voxseg.config import TrainOptions
from voxseg.train.distributed import barrier, rank_and_world
from voxseg.train.loop import TrainResult, train_model

__all__ = ["check_run_dir", "create_run", "is_planned_run", "load_saved_run", "new_run_dir", "plan_summary",
           "planned_message", "record_session", "train_run", "TRAINING_RECORD"]


def check_run_dir(run_dir: Path, overwrite: bool, resume: bool) -> None:
    """Refuse a run folder that cannot be used, touching nothing (checked before the data is validated)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(run_dir, "exists and is not a folder; name a new run folder")
    if resume:
        if not (run_dir / CHECKPOINT_LAST).exists() and not is_planned_run(run_dir):
            raise InputError(run_dir, "nothing to resume: no checkpoint_last.pt in this run folder (and not a run "
                                      "planned with --plan-only)")
        check_writable(run_dir)
        return
    check_writable(run_dir.parent if run_dir.exists() else run_dir)  # made beside it, then renamed (new_run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise InputError(run_dir, "run folder exists and is not empty; pass --overwrite to replace it "
                                      "or --resume to continue it")
        if not (run_dir / "plan.json").exists():
            raise InputError(run_dir, "refusing to --overwrite a folder that is not a voxseg run (no plan.json)")


def is_planned_run(run_dir: Path) -> bool:
    """A run folder as ``--plan-only`` made it (plan and split; no log or checkpoint: nothing trained yet), which
    ``--resume`` starts."""
    trained = ("log.csv", CHECKPOINT_LAST, "checkpoint_best.pt", "checkpoint_swa.pt")
    return (run_dir / "plan.json").exists() and (run_dir / "split.json").exists() and not any(
        (run_dir / name).exists() for name in trained)


@contextlib.contextmanager
def new_run_dir(run_dir: Path) -> Iterator[Path]:
    """Make a new run in a hidden sibling folder that takes the run folder's name only when the block ends
    well: an option that fails while planning leaves neither a half-made folder nor (with --overwrite) a
    deleted old run. Only called after :func:`check_run_dir` allowed replacing ``run_dir``."""
    staging = run_dir.with_name(f".{run_dir.name}.new")
    if staging.exists():  # left by a killed run
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if run_dir.exists():
        shutil.rmtree(run_dir)
    staging.rename(run_dir)


def create_run(run_dir: Path, dataset: Dataset, options: TrainOptions, cases: list[Case], mapping: LabelMapping,
               rows: dict[str, CaseSummary], split_name: str, split, log: Callable[[str], None], progress: bool
               ) -> tuple[RunPlan, list[PreparedCase]]:
    """Preprocess the cases into the cache, plan the run and write its folder (plan, the split as ``split_name``,
    dataset, fingerprint), whole or not at all (:func:`new_run_dir`). ``options``: resolved from the data
    (:func:`voxseg.plan.resolve_options`); ``rows``: the cases' validation rows. Returns the plan and the
    prepared cases."""
    label_names_for(options.label_names, dataset, mapping.values)  # a wrong --label-names, before preprocessing
    with new_run_dir(run_dir) as staging:
        prepared = prepare_cases(cases, options.preprocess, mapping, staging / "preprocessed", progress)
        fingerprint = run_fingerprint(rows, options.preprocess.orientation)
        plan = checked_plan(options, dataset, mapping.values, prepared, log, run_dir, fingerprint)
        plan = plan_validation(plan, _validation_cases(prepared, split), log)
        plan.save(staging / "plan.json")
        save_json_atomic(split, staging / split_name)
        save_json_atomic(dataset.to_dict(), staging / "dataset.json")
        fingerprint.save(staging)
    return plan, prepared


def _validation_cases(prepared: list[PreparedCase], split: dict | list[dict]) -> list[PreparedCase]:
    """The prepared cases a split validates on; of k folds, the largest fold's (validation is planned once)."""
    folds = split if isinstance(split, list) else [split]
    ids = set(max((f["val"] for f in folds), key=len, default=[]))
    return [c for c in prepared if c.case_id in ids]


def load_saved_run(dataset: Dataset, run_dir: Path) -> tuple[RunPlan, dict, list[Case]]:
    """The plan and split a run folder holds (perhaps edited), and the dataset's cases the split names."""
    plan = RunPlan.load(run_dir / "plan.json")
    split = read_split(run_dir / "split.json")
    wanted = set(split["train"]) | set(split["val"])
    cases = [c for c in dataset.cases if c.case_id in wanted]
    missing = wanted - {c.case_id for c in cases}
    if missing:
        raise InputError(dataset.root, f"cases of the saved split are missing: {', '.join(sorted(missing))}")
    return plan, split, cases


def train_run(run_dir: Path, plan: RunPlan, split: dict, prepared: list[PreparedCase], resume: bool,
              progress: bool, log: Callable[[str], None], cube_cache: Path | None = None) -> TrainResult:
    """Train the run in ``run_dir`` on its split of the prepared cases; ``cube_cache``: where ``--minicubes`` are
    cached (default ``run_dir/preprocessed/minicubes``; the folds of a cross-validation share their root's)."""
    resume = resume and (run_dir / CHECKPOINT_LAST).exists()  # without one: a planned run starts here
    by_id = {c.case_id: c for c in prepared}
    train_cases = [by_id[i] for i in split["train"]]
    if plan.train.minicube:
        args = (plan.train.minicube, plan.train.minicube_context, cube_cache or run_dir / "preprocessed" / "minicubes",
                cache_stamp(plan.preprocess, plan.label_values))
        rank = rank_and_world()[0]
        cubes = cached_minicubes(train_cases, *args) if rank == 0 else None
        barrier()  # under torchrun, rank 0 writes the cubes and the other ranks map them
        train_cases = cubes if rank == 0 else cached_minicubes(train_cases, *args)
        log(f"training on {len(train_cases)} fixed minicubes {plan.train.minicube} + {plan.train.minicube_context} "
            f"voxels of context")
    return train_model(plan, train_cases, [by_id[i] for i in split["val"]], run_dir,
                       resume=resume, progress=progress, device=str(resolve_device(plan.train.device)), log=log)


def plan_summary(plan: RunPlan, split: dict | None = None) -> str:
    """One line: network, patch, batch, loss, epochs, budget, labels with their names (and the split's sizes)."""
    t = plan.train
    budget = f", {t.time_budget_minutes:g}-minute budget" if t.time_budget_minutes else ""
    cases = f"; split {len(split['train'])} train / {len(split['val'])} validation cases" if split else ""
    named = {v: plan.label_names.get(str(v)) for v in plan.label_values}
    labels = "[" + ", ".join(f"{v} {n}" if n else str(v) for v, n in named.items()) + "]"
    recipe = f"recipe {plan.recipe['name']}: " if plan.recipe.get("name") else ""
    return (f"{recipe}{plan.network.name} {plan.network.spatial_dims}D, patch {t.patch_size}, batch {t.batch_size}, loss "
            f"{t.loss}, {t.epochs} epochs x {t.iterations_per_epoch} iterations{budget}, labels {labels} "
            f"({plan.label_scheme}){cases}")


def planned_message(run_dir: Path, dataset: Dataset, train_flags: str = "--resume") -> str:
    """What ``--plan-only`` says: where the plan is, and the command that trains it."""
    return (f"planned, not trained: read or edit {run_dir / 'plan.json'}, then train it with "
            f"'voxseg train {dataset.root} --out {run_dir} {train_flags}'")


TRAINING_RECORD = "training.json"


def record_session(run_dir: Path, command: str) -> Path:
    """Add one finished training session to ``run_dir/training.json`` (written atomically): the command that ran
    it, the voxseg version and the hardware (the GPU's name, or the CPU's and its core count), which the model
    card of ``voxseg export`` reports (the device: as the run's plan.json chooses it)."""
    from voxseg import __version__

    path = run_dir / TRAINING_RECORD
    sessions = json.loads(path.read_text()).get("sessions", []) if path.exists() else []
    dev = resolve_device(RunPlan.load(run_dir / "plan.json").train.device)
    if dev.type == "cuda":
        hardware = f"GPU {torch.cuda.get_device_name(dev)}"
    else:
        cpu = platform.processor() or platform.machine() or "CPU"
        hardware = f"CPU {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads used"
    sessions.append({"command": command, "voxseg_version": __version__, "hardware": hardware,
                     "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return save_json_atomic({"sessions": sessions}, path)
