"""``voxseg train``: from a dataset folder to a trained run folder (validate, preprocess into the cache, plan, split,
train), or to a planned one, or a resumed one. The run folder's layout: :mod:`voxseg.runs.run_folder`."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from voxseg.config import RunPlan
from voxseg.data.cache import PreparedCase, prepare_cases
from voxseg.data.preprocess import LabelMapping
from voxseg.data.splits import split_cases
from voxseg.errors import InputError
from voxseg.io.datasets import Dataset
from voxseg.io.layouts import load_dataset
from voxseg.plan.check import check_edited_plan
from voxseg.plan.resolve import resolve_options
from voxseg.runs.checks import checked_setup
from voxseg.runs.kfold import run_folds
from voxseg.config import TrainOptions
from voxseg.runs.run_folder import (check_run_dir, create_run, is_planned_run, load_saved_run, plan_summary,
                                    planned_message, train_run)
from voxseg.train.distributed import barrier, init_distributed
from voxseg.train.loop import TrainResult

__all__ = ["run_training"]


def run_training(data_root: str | Path, run_dir: str | Path, options: TrainOptions, overwrite: bool = False,
                 resume: bool = False, progress: bool = True, log: Callable[[str], None] = print,
                 plan_only: bool = False) -> TrainResult | None:
    """``voxseg train``: validate, preprocess, plan, split, train; everything lands in ``run_dir``.

    With ``plan_only`` it stops (returning None) once the run folder holds its plan, split and preprocessed
    cases: ``plan.json`` can be read, or edited, and ``resume`` then trains the run as that file says.

    With ``options.folds = k`` the run folder holds ``splits.json`` (k seeded folds by case, editable)
    and one complete run folder per fold (``fold_0/`` ...); ``options.fold`` picks one fold or ``"all"``.
    Once every fold has trained, ``voxseg.metrics.evaluate_cross_validation`` evaluates them out of fold and
    chooses post-processing (``voxseg train`` calls it).
    """
    run_dir = Path(run_dir)
    dataset = load_dataset(data_root)
    rank, world = init_distributed()
    if plan_only and (resume or world > 1):
        raise InputError(run_dir, "--plan-only plans a new run in one process (not with --resume or under torchrun)")
    if options.folds:
        if world > 1:
            raise InputError(run_dir, "k-fold cross-validation under torchrun is not supported; train one "
                                      "--fold at a time")
        return run_folds(dataset, run_dir, options, overwrite, resume, progress, log, plan_only)
    if rank > 0:  # rank 0 validates, preprocesses and plans; the others read its run folder
        barrier()
        plan, split, prepared = _saved_run(dataset, run_dir, progress=False)
        return train_run(run_dir, plan, split, prepared, resume, progress, log)
    check_run_dir(run_dir, overwrite, resume)
    if resume:
        plan, split, prepared = _saved_run(dataset, run_dir, progress, log)
    else:
        plan, split, prepared = _new_run(dataset, run_dir, options, log, progress)
        if plan_only:
            log(planned_message(run_dir, dataset))
            return None
    barrier()
    return train_run(run_dir, plan, split, prepared, resume, progress, log)


def _saved_run(dataset: Dataset, run_dir: Path, progress: bool, log: Callable[[str], None] | None = None
               ) -> tuple[RunPlan, dict, list[PreparedCase]]:
    """The run folder's plan and split, and its cases prepared (from its cache). With ``log`` (rank 0), a run
    that ``--plan-only`` planned is checked first: its plan.json may have been edited since."""
    plan, split, cases = load_saved_run(dataset, run_dir)
    if log is not None and is_planned_run(run_dir):
        check_edited_plan(plan, run_dir / "plan.json", log)
        log(f"starting the planned run: {plan_summary(plan, split)}")
    prepared = prepare_cases(cases, plan.preprocess, LabelMapping(plan.label_values), run_dir / "preprocessed",
                             progress)
    return plan, split, prepared


def _new_run(dataset: Dataset, run_dir: Path, options: TrainOptions, log: Callable[[str], None], progress: bool
             ) -> tuple[RunPlan, dict, list[PreparedCase]]:
    """Validate the data, decide what it decides, split it, and write the new run folder (plan, split, cache)."""
    cases, mapping, rows = checked_setup(dataset, options, log)
    options = resolve_options(options, dataset, cases, rows, log, progress)
    split = split_cases([c.case_id for c in cases], options.train.val_fraction, options.train.seed)
    plan, prepared = create_run(run_dir, dataset, options, cases, mapping, rows, "split.json", split, log, progress)
    log(f"plan: {plan_summary(plan, split)}")
    return plan, split, prepared
