"""Shared by the benchmarks: a seeded 80/20 split by case, training on the 80%, prediction of the
held-out 20% through the full chain (NIfTI in, NIfTI in the input geometry out) and evaluation."""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from voxseg.infer import PredictOptions, load_model, predict_cases
from voxseg.io import load_dataset
from voxseg.metrics import evaluate_folders
from voxseg.train import TrainOptions, TrainResult, checked_cases, run_training, split_cases

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
    summaries: dict  # TTA setting -> summary (the first entry is ``summary``)


def split_dataset(data: Path, seed: int, test_fraction: float = 0.2):
    """Valid cases of ``data`` split by case: (train ids, test cases)."""
    dataset = load_dataset(data)
    valid = checked_cases(dataset, skip_invalid=True)
    split = split_cases([c.case_id for c in valid], test_fraction, seed)
    return split["train"], [c for c in valid if c.case_id in set(split["val"])]


def train_and_test(data: Path, out: Path, options: TrainOptions, structures: dict[str, list[int]], seed: int,
                   which: str = "last", test_fraction: float = 0.2, progress: bool = True,
                   tta: tuple[str, ...] = ("none",)) -> HeldOutResult:
    """Train on the training split (no peeking at the test cases), predict and evaluate the test split
    once per TTA setting in ``tta`` (into ``out/pred_<tta>``)."""
    train_ids, test_cases = split_dataset(data, seed, test_fraction)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    options.include_cases = train_ids
    options.skip_invalid = True
    result = run_training(data, out / "run", options, overwrite=True, progress=progress)
    refs = out / "ref"
    refs.mkdir()
    for case in test_cases:
        (refs / f"{case.case_id}.nii.gz").symlink_to(Path(case.label_path).resolve())
    model, plan = load_model(out / "run", which=which)
    summaries, minutes = {}, {}
    for setting in tta:
        start = time.perf_counter()
        pred = out / f"pred_{setting}"
        predict_cases(model, plan, test_cases, pred, progress=progress, options=PredictOptions(tta=setting))
        minutes[setting] = (time.perf_counter() - start) / 60
        _, summaries[setting] = evaluate_folders(pred, refs, pred, structures, progress=progress)
    first = tta[0]
    return HeldOutResult(summaries[first], result, minutes[first], len(train_ids), len(test_cases), plan, summaries)
