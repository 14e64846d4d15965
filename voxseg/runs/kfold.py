"""K-fold cross-validation by case: ``RUN/splits.json`` (k seeded folds, editable) and one complete run folder per
fold (``RUN/fold_0/`` ...), all sharing ``RUN/plan.json`` and ``RUN/preprocessed/``."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from voxseg.config import RunPlan
from voxseg.data.cache import PreparedCase, prepare_cases
from voxseg.data.preprocess import LabelMapping
from voxseg.data.splits import kfold_splits, read_split
from voxseg.errors import InputError
from voxseg.infer.model_files import CHECKPOINT_LAST
from voxseg.io.datasets import Dataset
from voxseg.io.files import save_json_atomic
from voxseg.plan.check import check_edited_plan
from voxseg.plan.resolve import resolve_options
from voxseg.runs.checks import checked_setup
from voxseg.config import TrainOptions
from voxseg.runs.run_folder import check_run_dir, create_run, plan_summary, planned_message, train_run
from voxseg.train.loop import TrainResult

__all__ = ["run_folds"]

SPLITS_NAME = "splits.json"


def run_folds(dataset: Dataset, run_dir: Path, options: TrainOptions, overwrite: bool, resume: bool,
              progress: bool, log: Callable[[str], None], plan_only: bool = False) -> TrainResult | None:
    """Plan a cross-validation with ``options.folds`` folds in ``run_dir`` (or take the one there: with ``resume``,
    or when it holds ``splits.json`` and not ``overwrite``) and train ``options.fold`` (a fold number or
    ``"all"``). Returns the last fold's result; None with ``plan_only``."""
    if resume or ((run_dir / SPLITS_NAME).exists() and not overwrite):
        plan, splits, prepared = _existing_folds(dataset, run_dir, options, log, progress, plan_only)
    else:
        plan, splits, prepared = _new_folds(dataset, run_dir, options, overwrite, log, progress)
        if plan_only:
            log(planned_message(run_dir, dataset, f"--folds {len(splits)}") + " (--fold N: one fold)")
            return None
    folds = range(len(splits)) if options.fold == "all" else [int(options.fold)]
    result = None
    for k in folds:
        fold_dir = run_dir / f"fold_{k}"
        fold_resume = resume and (fold_dir / CHECKPOINT_LAST).exists()
        if not fold_resume:
            if fold_dir.exists():
                shutil.rmtree(fold_dir)
            fold_dir.mkdir(parents=True)
            plan.save(fold_dir / "plan.json")
            save_json_atomic(splits[k], fold_dir / "split.json")
        log(f"fold {k}: {len(splits[k]['train'])} train / {len(splits[k]['val'])} validation cases")
        result = train_run(fold_dir, plan, splits[k], prepared, fold_resume, progress, log,
                           cube_cache=run_dir / "preprocessed" / "minicubes")
    return result


def _existing_folds(dataset: Dataset, run_dir: Path, options: TrainOptions, log: Callable[[str], None],
                    progress: bool, plan_only: bool) -> tuple[RunPlan, list[dict], list[PreparedCase]]:
    """An existing cross-validation: its plan, its (perhaps edited) splits and its prepared cases."""
    splits_path = run_dir / SPLITS_NAME
    splits = read_split(splits_path, folds=True) if splits_path.exists() else None
    if splits is None:
        raise InputError(run_dir, "nothing to resume: no splits.json in this run folder")
    if plan_only:
        raise InputError(run_dir, "holds a cross-validation already (splits.json): train it with --folds "
                                  f"{len(splits)}, or plan it again with --overwrite")
    plan = RunPlan.load(run_dir / "plan.json")
    if not any((run_dir / f"fold_{k}" / CHECKPOINT_LAST).exists() for k in range(len(splits))):
        check_edited_plan(plan, run_dir / "plan.json", log)  # no fold has trained: it may have been edited
    cases = [c for c in dataset.cases if c.case_id in {i for s in splits for i in s["train"] + s["val"]}]
    mapping = LabelMapping(plan.label_values)
    _check_fold_choice(options.fold, len(splits), run_dir)
    prepared = prepare_cases(cases, plan.preprocess, mapping, run_dir / "preprocessed", progress)
    return plan, splits, prepared


def _new_folds(dataset: Dataset, run_dir: Path, options: TrainOptions, overwrite: bool,
               log: Callable[[str], None], progress: bool) -> tuple[RunPlan, list[dict], list[PreparedCase]]:
    """A new cross-validation: the run folder checked, the data validated, the folds drawn, the run planned and
    written."""
    check_run_dir(run_dir, overwrite, resume=False)
    cases, mapping, rows = checked_setup(dataset, options, log)
    options = resolve_options(options, dataset, cases, rows, log, progress)
    if not 2 <= options.folds <= len(cases):
        raise InputError(run_dir, f"--folds must be between 2 and the number of cases ({len(cases)}), "
                                  f"got {options.folds}")
    splits = kfold_splits([c.case_id for c in cases], options.folds, options.train.seed)
    _check_fold_choice(options.fold, len(splits), run_dir)
    plan, prepared = create_run(run_dir, dataset, options, cases, mapping, rows, SPLITS_NAME, splits, log, progress)
    log(f"{len(splits)}-fold cross-validation by case (splits.json); plan: {plan_summary(plan)}")
    return plan, splits, prepared


def _check_fold_choice(fold: str, n_folds: int, run_dir: Path) -> None:
    if fold != "all" and not (str(fold).isdigit() and int(fold) < n_folds):
        raise InputError(run_dir, f"--fold must be 'all' or a fold number 0-{n_folds - 1}, got {fold!r}")
