"""``voxseg predict``: label maps (and optional probability maps) in each input's own geometry."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from voxseg.data.preprocess import LabelMapping, preprocess_case, restore_to_original
from voxseg.errors import InputError
from voxseg.infer.runtime import load_model, predict_volume, probabilities_to_labels
from voxseg.io.datasets import Case, find_prediction_cases, read_case
from voxseg.io.image import is_nifti, write_volume
from voxseg.plan.plan import RunPlan

__all__ = ["PredictedCase", "predict_case", "predict_cases", "predict_path"]


@dataclass
class PredictedCase:
    case_id: str
    label_path: Path
    probability_path: Path | None
    seconds: float


def predict_case(model: torch.nn.Module, plan: RunPlan, case: Case, out_path: Path,
                 probability_path: Path | None = None, device: torch.device | None = None,
                 progress: bool = False) -> PredictedCase:
    """Segment one case and write its label map (original label values) in the input's geometry.

    Args:
        case: the case's channel files, in the model's channel order.
        out_path: label NIfTI to write (atomically).
        probability_path: also write ``(K, Z, Y, X)`` probabilities as a 4-D float32 NIfTI.
    """
    device = device or torch.device("cpu")
    start = time.perf_counter()
    image, _, geometry = read_case(case, with_label=False)
    pre = preprocess_case(image, geometry.spacing, plan.preprocess)
    bar = tqdm(desc=case.case_id, unit="win", disable=not progress, leave=False)
    probs = predict_volume(model, plan, pre.image, device, progress=bar.update)
    bar.close()
    # Outside the crop: background for softmax classes, no region at all for sigmoid regions.
    background = None if plan.label_scheme.startswith("brats") else 0
    probs = restore_to_original(probs, pre.record, is_label=False, background_channel=background)
    consecutive = probabilities_to_labels(probs, plan)
    labels = LabelMapping(plan.label_values).to_original(consecutive)
    dtype = np.uint8 if max(plan.label_values) < 256 else np.int16
    write_volume(labels.astype(dtype), geometry, out_path)
    if probability_path is not None:
        write_volume(probs.astype(np.float32), geometry, probability_path)
    return PredictedCase(case.case_id, out_path, probability_path, time.perf_counter() - start)


def predict_cases(model: torch.nn.Module, plan: RunPlan, cases: list[Case], out_dir: str | Path,
                  probabilities: bool = False, progress: bool = True) -> list[PredictedCase]:
    """Predict several cases into ``out_dir/<case_id>.nii.gz`` (and ``<case_id>_prob.nii.gz``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for case in tqdm(cases, desc="predict", unit="case", disable=not progress):
        prob = out_dir / f"{case.case_id}_prob.nii.gz" if probabilities else None
        results.append(predict_case(model, plan, case, out_dir / f"{case.case_id}.nii.gz", prob,
                                    progress=progress and len(cases) == 1))
    return results


def predict_path(run_dir: str | Path, input_path: str | Path, out: str | Path, probabilities: bool = False,
                 which: str = "best", progress: bool = True,
                 validate: Callable[[list[Case]], None] | None = None,
                 overlap: float | None = None) -> list[PredictedCase]:
    """``voxseg predict RUN INPUT OUT``: INPUT is a NIfTI file, a case folder or a dataset folder.

    OUT is a folder, or a ``.nii.gz`` file name when INPUT is a single case. ``validate`` (if given)
    is called with the cases first and raises to refuse them.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "plan.json").exists():
        raise InputError(run_dir, "not a voxseg run folder (no plan.json); train one with 'voxseg train'")
    model, plan = load_model(run_dir, which)
    if overlap is not None:
        plan.inference.overlap = overlap
    if plan.train.num_threads:
        torch.set_num_threads(plan.train.num_threads)
    cases = find_prediction_cases(Path(input_path), plan.channel_names)
    if validate is not None:
        validate(cases)
    out = Path(out)
    if is_nifti(out):
        if len(cases) != 1:
            raise InputError(out, f"a single output file was given but the input holds {len(cases)} cases; "
                                  "give a folder")
        prob = out.with_name(out.name.replace(".nii", "_prob.nii")) if probabilities else None
        return [predict_case(model, plan, cases[0], out, prob, progress=progress)]
    return predict_cases(model, plan, cases, out, probabilities, progress)
