"""How much a trained run's labels depend on where the sliding windows fall (issue: inference at full strength,
label agreement with MONAI on the whole volume).

For each held-out BraTS case of a run (the cases of --data not in its split.json): voxseg's sliding window on the
cropped, preprocessed volume, and on the same volume zero-padded back to the whole extent (what a whole-volume
inferer such as MONAI's sees: other window positions, more background in each window). Prints the whole-tumour
Dice of the crop prediction against the manual label and the foreground Dice between the two predictions (no TTA).
With --recalibrate-bn, a batch-norm run is also measured after re-estimating its running statistics on sliding
windows of its training cases (grid offsets 0, 8, 16, 24).

Compare a default run of benchmarks/brats.py (instance norm) with one trained with
``--net-args base_width=16,depth=5,deep_supervision=1,norm=batch``: instance norm computes its statistics per
window, so its labels depend on the window grid; batch norm's running statistics do not, but with batch 2 on a
CPU they cost Dice. Current figures: docs/benchmarks.md.

Usage:
    python benchmarks/window_placement.py RUN [RUN ...] [--window 64] [--recalibrate-bn]

The last line is a JSON object with, per run, the mean WT Dice and the mean crop-vs-whole agreement.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
from _heldout import SHARED_DATA
from _results import save_result

from voxseg.cli import user_errors

CHANNELS = ["flair", "t1", "t1ce", "t2"]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def _held_out(run: Path, data: Path) -> list[Path]:
    split = json.loads((run / "split.json").read_text())
    seen = set(split["train"]) | set(split["val"])
    return sorted(p for p in data.iterdir() if p.is_dir() and p.name not in seen)


def _prepared(case_dir: Path, plan):
    """Preprocessed image and label, and the padding that puts the crop back into the whole (resampled) extent."""
    from voxseg.data.preprocess import preprocess_case
    from voxseg.io import find_prediction_cases, read_case, read_volume

    image, _, geometry = read_case(find_prediction_cases(case_dir, CHANNELS)[0], with_label=False)
    label = read_volume(next(case_dir.glob("*seg.nii*")))[0]
    pre = preprocess_case(image, geometry.spacing, plan.preprocess, label=label, affine=geometry.affine)
    r = pre.record
    pads = [(round(a * n / c), round((o - b) * n / c)) for (a, b), o, c, n in
            zip(r.crop_bbox, r.original_shape, r.cropped_shape, r.resampled_shape)]
    return pre.image, pre.label, pads


def _measure(model, plan, cases) -> tuple[list[float], list[float]]:
    from voxseg.infer import predict_volume, probabilities_to_labels

    wt, agreement = [], []
    for image, label, pads in cases:
        with torch.inference_mode():
            crop = probabilities_to_labels(predict_volume(model, plan, image, torch.device("cpu")), plan) > 0
            whole = predict_volume(model, plan, np.pad(image, [(0, 0), *pads]), torch.device("cpu"))
        inside = (slice(None),) + tuple(slice(a, a + n) for (a, _), n in zip(pads, image.shape[1:]))
        whole = probabilities_to_labels(np.ascontiguousarray(whole[inside]), plan) > 0
        wt.append(_dice(crop, label > 0))
        agreement.append(_dice(crop, whole))
    return wt, agreement


def _recalibrated(model, plan, run: Path, window: int):
    """A copy whose batch-norm running statistics are re-estimated (cumulative average) on sliding windows of the
    run's training cases, as the network meets them at prediction."""
    from voxseg.infer import window_grid

    model = copy.deepcopy(model)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise SystemExit(f"error: {run}: --recalibrate-bn needs a batch-norm run")
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    split = json.loads((run / "split.json").read_text())
    with torch.no_grad():
        for case_id in split["train"]:
            cached = run / "preprocessed" / f"{case_id}.image.npy"  # runs of older voxseg versions cached one .npz per case
            image = np.load(cached) if cached.exists() else np.load(run / "preprocessed" / f"{case_id}.npz")["image"]
            for offset in (0, 8, 16, 24):
                volume = np.pad(image, [(0, 0)] + [(offset, max(0, window - s - offset)) for s in image.shape[1:]])
                for start in np.array(np.meshgrid(*window_grid(volume.shape[1:], [window] * 3, 0.5))).reshape(3, -1).T:
                    box = (slice(None),) + tuple(slice(s, s + window) for s in start)
                    model(torch.from_numpy(np.ascontiguousarray(volume[box]))[None])
    return model.eval()


@user_errors
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="trained BraTS run folders (benchmarks/brats.py)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "brats2018")
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--recalibrate-bn", action="store_true")
    args = parser.parse_args()
    from voxseg.infer import load_model

    torch.set_num_threads(args.threads)
    results = {}
    print(f"{'run':<48}{'held-out':>9}{'WT Dice':>9}{'crop vs whole':>15}")
    for run in args.runs:
        model, plan = load_model(run)
        plan.train.patch_size = [args.window] * 3
        plan.inference.batch_size = 1
        cases = [_prepared(case_dir, plan) for case_dir in _held_out(run, args.data)]
        variants = [("", model)] + ([(" (BN re-estimated)", _recalibrated(model, plan, run, args.window))]
                                    if args.recalibrate_bn else [])
        for suffix, net in variants:
            wt, agreement = _measure(net, plan, cases)
            name = f"{run}{suffix}"
            results[name] = {"dice_wt": round(float(np.mean(wt)), 4), "crop_vs_whole": round(float(np.mean(agreement)), 4),
                             "per_case_crop_vs_whole": [round(a, 3) for a in agreement]}
            print(f"{name:<48}{len(cases):>9}{np.mean(wt):>9.3f}{np.mean(agreement):>15.3f}", flush=True)
    print(json.dumps(results))
    save_result("window_placement", results, sys.argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
