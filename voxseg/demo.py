"""``voxseg demo``: the whole chain on a built-in synthetic dataset (or ``--data``), no download, no GPU.

Synthetic phantoms (brain-like, BraTS-like tumour labels 0/1/2/4, four channels, bias field, noise) are
generated deterministically; training cases and held-out test cases never overlap. With ``--data``, a
seeded 20% of the dataset's valid cases is held out for testing.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from voxseg.data.phantoms import make_phantom_dataset
from voxseg.errors import InputError
from voxseg.infer.predict import predict_cases
from voxseg.infer.model_files import load_model
from voxseg.io.datasets import read_case
from voxseg.io.layouts import load_dataset
from voxseg.io.image import read_volume
from voxseg.metrics import evaluate_folders, format_summary
from voxseg.metrics.structures import structures_for
from voxseg.report import REPORT_NAME, plot_learning_curves, plot_overlay, write_report
from voxseg.config import NetworkConfig, TrainConfig, TrainOptions
from voxseg.runs import checked_cases, run_training, split_cases

__all__ = ["run_demo"]

_MARKER = "voxseg_demo.json"


def _prepare_out(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "exists and is not a folder; choose --out")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise InputError(out_dir, "demo folder exists and is not empty; pass --overwrite or choose --out")
        if not (out_dir / _MARKER).exists():
            raise InputError(out_dir, "refusing to --overwrite a folder that voxseg demo did not create")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)


def run_demo(out_dir: str | Path, data: str | Path | None = None, minutes: float = 3.0, overwrite: bool = False,
             seed: int = 0, n_train: int = 16, n_test: int = 4, log: Callable[[str], None] = print,
             progress: bool = True, options: TrainOptions | None = None) -> dict:
    """Train for ``minutes``, predict the held-out cases, evaluate, print and return the summary.

    Args:
        out_dir: demo folder (``data/``, ``run/``, ``predictions/``, ``test_labels/``, ``overlay.png``,
            ``report.html``).
        data: a real dataset folder; None makes synthetic phantoms.
        minutes: training time budget.
        n_train / n_test: number of synthetic training / held-out phantoms.
        options: training options (defaults: the CPU demo settings below).
    """
    out_dir = Path(out_dir)
    if data is not None:  # a wrong --data path, or too few valid cases, fails here, before anything is written
        valid = checked_cases(load_dataset(data), skip_invalid=True, log=log)
        split = split_cases([c.case_id for c in valid], max(0.2, 1 / max(len(valid), 1)), seed + 1)
        if not split["train"] or not split["val"]:
            raise InputError(Path(data), f"{len(valid)} valid case(s): the demo needs at least 2, one to train "
                                         "on and one held out")
    _prepare_out(out_dir, overwrite)
    (out_dir / _MARKER).write_text(json.dumps({"data": str(data) if data else "phantoms", "seed": seed}) + "\n")
    if data is None:
        log(f"making {n_train} training and {n_test} held-out synthetic phantoms in {out_dir / 'data'}")
        train_root = make_phantom_dataset(out_dir / "data" / "train", n_cases=n_train, seed=seed)
        test_root = make_phantom_dataset(out_dir / "data" / "test", n_cases=n_test, seed=seed + 1000)
        train_ids = None
        test_cases = load_dataset(test_root).cases
    else:
        train_root = Path(data)
        train_ids = split["train"]
        test_cases = [c for c in valid if c.case_id in set(split["val"])]
        log(f"holding out {len(test_cases)} of {len(valid)} cases for testing: {', '.join(split['val'])}")
    if options is None:
        options = TrainOptions(
            network=NetworkConfig(kwargs={"base_width": 16, "depth": 4, "deep_supervision": True}),
            train=TrainConfig(time_budget_minutes=minutes, epochs=10_000, iterations_per_epoch=25, batch_size=2,
                              seed=seed),
            max_patch_voxels=64 * 64 * 64, skip_invalid=True)
    options.include_cases = train_ids
    run_dir = out_dir / "run"
    result = run_training(train_root, run_dir, options, overwrite=True, progress=progress, log=log)
    plot_learning_curves(run_dir / "log.csv", run_dir / "learning_curves.png")

    model, plan = load_model(run_dir)
    pred_dir, label_dir = out_dir / "predictions", out_dir / "test_labels"
    predict_cases(model, plan, test_cases, pred_dir, progress=progress)
    label_dir.mkdir(parents=True, exist_ok=True)
    for case in test_cases:  # the held-out references, named like the predictions
        (label_dir / f"{case.case_id}.nii.gz").symlink_to(Path(case.label_path).resolve())
    structures = structures_for(label_dir, run_dir, None)
    rows, summary = evaluate_folders(pred_dir, label_dir, out_dir, structures, progress=progress)

    first = test_cases[0]
    image, reference, _ = read_case(first, with_label=True)
    prediction, geometry = read_volume(pred_dir / f"{first.case_id}.nii.gz", dtype=np.int32)
    names = {int(v): n for v, n in plan.label_names.items() if int(v) != 0}
    plot_overlay(image[0], reference, prediction, out_dir / "overlay.png", title=first.case_id, label_names=names,
                 spacing=geometry.spacing)
    report = write_report(out_dir / REPORT_NAME, run_dir, [out_dir])
    log(format_summary(summary))
    log(f"trained {result.elapsed_minutes:.1f} min ({result.epochs_done} epochs, stopped by {result.stopped_by}); "
        f"best validation Dice {result.best_metric:.3f}")
    log(f"results in {out_dir}: run/ (plan.json, checkpoints, log.csv, learning_curves.png), predictions/, "
        f"metrics_per_case.csv, metrics_summary.json, overlay.png; open {report} in a browser")
    return summary
