"""Shared by the benchmarks: a seeded 80/20 split by case, training on the 80%, prediction of the
held-out 20% through the full chain (NIfTI in, NIfTI in the input geometry out) and evaluation."""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from voxseg.errors import InputError
from voxseg.infer import PredictOptions, load_model, predict_cases
from voxseg.infer.postprocess import apply_postprocessing
from voxseg.metrics.postprocessing import choose_run_postprocessing
from voxseg.io.image import read_volume, write_volume
from voxseg.io import load_dataset
from voxseg.metrics import evaluate_folders
from voxseg.train import TrainResult
from voxseg.runs import TrainOptions, checked_cases, run_training, split_cases

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@dataclass
class HeldOutResult:
    summary: dict
    train: TrainResult
    predict_minutes: float
    n_train: int
    n_test: int
    plan: object
    summaries: dict  # TTA setting -> summary (the first entry is ``summary``); "<tta>+pp" post-processed
    postprocessing: list = None  # descriptions of the rules chosen on the training cases (None: not chosen)
    predict_minutes_by_tta: dict = None  # TTA setting -> minutes predicting the held-out cases


def split_dataset(data: Path, seed: int, test_fraction: float = 0.2):
    """Valid cases of ``data`` split by case: (train ids, test cases)."""
    dataset = load_dataset(data)
    valid = checked_cases(dataset, skip_invalid=True)
    split = split_cases([c.case_id for c in valid], test_fraction, seed)
    if not split["train"] or not split["val"]:  # before training: nothing would be left to test
        raise InputError(data, f"{len(valid)} valid case(s): too few to hold out {test_fraction:.0%} for testing")
    return split["train"], [c for c in valid if c.case_id in set(split["val"])]


def train_and_test(data: Path, out: Path, options: TrainOptions, structures: dict[str, list[int]], seed: int,
                   which: str = "last", test_fraction: float = 0.2, progress: bool = True,
                   tta: tuple[str, ...] = ("none",), postprocess: bool = False,
                   resume: bool = False) -> HeldOutResult:
    """Train on the training split (no peeking at the test cases), predict and evaluate the test split
    once per TTA setting in ``tta`` (into ``out/pred_<tta>``).

    ``postprocess``: also choose post-processing rules (:func:`voxseg.infer.candidate_rules`, greedy, kept
    only if mean Dice rises) on the model's predictions of its own TRAINING cases (no k-fold fits the
    budget, and the test cases must not be seen), save them in the run, and evaluate the test predictions
    with them too (``out/pred_<tta>_pp``, summary key ``"<tta>+pp"``).

    ``resume``: continue an interrupted run in ``out/run`` (its time budget counts the minutes already
    trained) instead of starting afresh; earlier predictions in ``out`` are replaced."""
    train_ids, test_cases = split_dataset(data, seed, test_fraction)
    options.include_cases = train_ids
    options.skip_invalid = True
    if resume:
        for stale in out.iterdir():
            if stale.name != "run":
                shutil.rmtree(stale)
    else:
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
    result = run_training(data, out / "run", options, overwrite=not resume, resume=resume, progress=progress)
    refs = out / "ref"
    refs.mkdir()
    for case in test_cases:
        (refs / f"{case.case_id}.nii.gz").symlink_to(Path(case.label_path).resolve())
    model, plan = load_model(out / "run", which=which)
    summaries, minutes = {}, {}
    for setting in tta:
        start = time.perf_counter()
        pred = out / f"pred_{setting}"
        predict_cases(model, plan, test_cases, pred, progress=progress, options=PredictOptions(tta=setting),
                      log=print)
        minutes[setting] = (time.perf_counter() - start) / 60
        _, summaries[setting] = evaluate_folders(pred, refs, pred, structures, progress=progress)
    chosen = None
    if postprocess:
        chosen = _choose_on_training(data, out, model, plan, train_ids, tta[0], progress)
        for setting in tta:
            pred, pp = out / f"pred_{setting}", out / f"pred_{setting}_pp"
            pp.mkdir()
            for case in test_cases:
                label, geometry = read_volume(pred / f"{case.case_id}.nii.gz", dtype="int32")
                write_volume(apply_postprocessing(label, chosen).astype("uint8"), geometry,
                             pp / f"{case.case_id}.nii.gz")
            _, summaries[f"{setting}+pp"] = evaluate_folders(pp, refs, pp, structures, progress=progress)
    first = tta[0]
    return HeldOutResult(summaries[first], result, minutes[first], len(train_ids), len(test_cases), plan, summaries,
                         None if chosen is None else [r.describe() for r in chosen], minutes)


def _choose_on_training(data: Path, out: Path, model, plan, train_ids: list[str], tta: str, progress: bool) -> list:
    """Predict the training cases and choose post-processing rules on them (saved in ``out/run``)."""
    train_cases = [c for c in load_dataset(data).cases if c.case_id in set(train_ids)]
    pred, ref = out / "train_pred", out / "train_ref"
    ref.mkdir()
    for case in train_cases:
        (ref / f"{case.case_id}.nii.gz").symlink_to(Path(case.label_path).resolve())
    predict_cases(model, plan, train_cases, pred, progress=progress, options=PredictOptions(tta=tta))
    choice = choose_run_postprocessing(out / "run", pred_dir=pred, ref_dir=ref)
    for row in choice.table:
        print(f"post-processing on the training cases: {row['description']}: mean Dice {row['mean_before']:.4f} -> "
              f"{row['mean_after']:.4f} ({'kept' if row['kept'] else 'dropped'})")
    return choice.rules
