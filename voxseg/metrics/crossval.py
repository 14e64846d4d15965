"""Cross-validation results of a k-fold run (``voxseg train --folds k``): every case predicted by the fold model
that did not train on it, evaluated together, and post-processing chosen on that out-of-fold Dice.

Writes into the run folder: ``oof/pred/<case>.nii.gz``, ``oof/ref/`` (links to the references),
``oof/metrics_per_case.csv``, ``oof/metrics_summary.json`` and ``postprocessing.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from voxseg.infer.predict import predict_cases
from voxseg.infer.model_files import CHECKPOINT_LAST, load_model
from voxseg.io.datasets import Dataset
from voxseg.io.layouts import load_dataset
from voxseg.metrics.aggregate import format_summary
from voxseg.metrics.evaluate import evaluate_folders
from voxseg.metrics.postprocessing import choose_run_postprocessing
from voxseg.metrics.structures import structures_for

__all__ = ["evaluate_cross_validation", "out_of_fold_evaluation"]


def evaluate_cross_validation(data_root: str | Path | Dataset, run_dir: str | Path, progress: bool = True,
                              log: Callable[[str], None] = print) -> dict | None:
    """Out-of-fold evaluation of a k-fold run, then post-processing chosen on it (kept only where it raises
    the out-of-fold Dice). Does nothing until every fold has a checkpoint (``--fold`` trains one at a time).

    Args:
        data_root: the dataset the run trained on (a folder, or a loaded :class:`voxseg.io.Dataset`).
        run_dir: the k-fold run folder (``splits.json``, ``fold_0/`` ...).

    Returns:
        The out-of-fold summary (see :func:`voxseg.metrics.evaluate_folders`), or None when a fold is missing.
    """
    run_dir = Path(run_dir)
    splits = json.loads((run_dir / "splits.json").read_text())
    if not all((run_dir / f"fold_{k}" / CHECKPOINT_LAST).exists() for k in range(len(splits))):
        return None
    dataset = data_root if isinstance(data_root, Dataset) else load_dataset(data_root)
    summary = out_of_fold_evaluation(dataset, run_dir, splits, progress, log)
    choice = choose_run_postprocessing(run_dir)
    log(f"post-processing chosen on out-of-fold Dice (postprocessing.json): {choice}")
    return summary


def out_of_fold_evaluation(dataset: Dataset, run_dir: Path, splits: list[dict], progress: bool = True,
                           log: Callable[[str], None] = print) -> dict:
    """Predict every case with the fold model that did not train on it; evaluate all of them together.

    Writes ``oof/pred/<case>.nii.gz``, ``oof/metrics_per_case.csv`` and ``oof/metrics_summary.json``.
    """
    by_id = {c.case_id: c for c in dataset.cases}
    pred_dir, ref_dir = run_dir / "oof" / "pred", run_dir / "oof" / "ref"
    ref_dir.mkdir(parents=True, exist_ok=True)
    for k, split in enumerate(splits):
        model, plan = load_model(run_dir / f"fold_{k}")
        cases = [by_id[i] for i in split["val"]]
        predict_cases(model, plan, cases, pred_dir, progress=progress)
        for case in cases:
            link = ref_dir / f"{case.case_id}.nii.gz"
            if not link.exists():
                link.symlink_to(Path(case.label_path).resolve())
    _, summary = evaluate_folders(pred_dir, ref_dir, run_dir / "oof", structures_for(ref_dir, run_dir),
                                  progress=progress)
    log("out-of-fold evaluation (each case predicted by the fold that did not train on it):")
    log(format_summary(summary))
    return summary
