"""Inference benchmark (issue: inference at full strength): one BraTS-size case (4x240x240x155), the
default 3-D model, 2 CPU threads; voxseg's predict path next to MONAI's sliding_window_inference with
the same weights, window (128^3) and overlap (0.5), measured in the same run.

Each method runs in its own process so its peak RSS is its own. voxseg: crop to the nonzero box,
z-score, Gaussian-blended sliding window (mixed precision chosen by measurement), restore to the input
geometry. MONAI: the same normalised volume, uncropped, `sliding_window_inference(mode="gaussian")`.
With `--run RUN` the weights of a trained run are used (e.g. from benchmarks/brats.py); otherwise the
default network with seeded random weights (the label agreement then compares two noisy maps).

Usage:
    python benchmarks/inference.py [--case PATH_TO_BRATS_CASE_FOLDER] [--run RUN] [--threads 2]

The last line is a JSON object with speedup_vs_monai, label_dice and peak_rss_gib.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _heldout import SHARED_DATA

WINDOW = (128, 128, 128)
OVERLAP = 0.5


def _model_and_plan(run: str | None, n_channels: int):
    from voxseg.infer.runtime import build_model, load_model
    from voxseg.plan import NetworkConfig, RunPlan, TrainConfig

    if run:
        model, plan = load_model(run)
    else:
        plan = RunPlan(channel_names=[f"c{i}" for i in range(n_channels)], label_values=[0, 1, 2, 4],
                       network=NetworkConfig("unet", 3, {}), train=TrainConfig(patch_size=list(WINDOW)))
        torch.manual_seed(0)
        model = build_model(plan).eval()
    plan.train.patch_size = list(WINDOW)
    plan.inference.overlap = OVERLAP
    plan.inference.batch_size = 1
    return model, plan


def _worker(method: str, case_dir: Path, run: str | None, threads: int, out: Path) -> None:
    from voxseg.data.preprocess import preprocess_case, restore_to_original
    from voxseg.infer.runtime import predict_volume, probabilities_to_labels
    from voxseg.io import find_prediction_cases, read_case

    torch.set_num_threads(threads)
    case = find_prediction_cases(case_dir, ["flair", "t1", "t1ce", "t2"])[0]
    image, _, geometry = read_case(case, with_label=False)
    model, plan = _model_and_plan(run, image.shape[0])
    start = time.perf_counter()
    if method == "voxseg":
        pre = preprocess_case(image, geometry.spacing, plan.preprocess)
        with torch.inference_mode():
            probs = predict_volume(model, plan, pre.image, torch.device("cpu"))
        probs = restore_to_original(probs, pre.record, is_label=False)
        labels = probabilities_to_labels(probs, plan)
    else:
        from monai.inferers import sliding_window_inference

        # Same normalisation as voxseg, no crop: MONAI's inferer on the whole volume.
        plan.preprocess.crop_to_nonzero = False
        pre = preprocess_case(image, geometry.spacing, plan.preprocess)
        with torch.inference_mode():
            logits = sliding_window_inference(torch.from_numpy(pre.image)[None], WINDOW, 1, model, overlap=OVERLAP,
                                              mode="gaussian", sigma_scale=0.125)
        labels = probabilities_to_labels(torch.softmax(logits[0], 0).numpy(), plan)
    seconds = time.perf_counter() - start
    np.save(out / f"{method}.npy", labels)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB -> GiB
    (out / f"{method}.json").write_text(json.dumps({"seconds": seconds, "peak_rss_gib": peak}))


def _dice_foreground(a: np.ndarray, b: np.ndarray) -> float:
    fa, fb = a > 0, b > 0
    total = fa.sum() + fb.sum()
    return 1.0 if total == 0 else float(2 * (fa & fb).sum() / total)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", type=Path, default=SHARED_DATA / "brats2018" / "Brats18_2013_11_1")
    parser.add_argument("--run", default=None, help="a trained run folder (4 BraTS channels)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=["voxseg", "monai"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.case, args.run, args.threads, args.out)
        return 0
    if not args.case.exists():
        print(f"error: {args.case}: BraTS case not found (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for method in ("monai", "voxseg"):
            cmd = [sys.executable, __file__, "--worker", method, "--case", str(args.case), "--threads",
                   str(args.threads), "--out", str(out)] + (["--run", args.run] if args.run else [])
            subprocess.run(cmd, check=True)
            results[method] = json.loads((out / f"{method}.json").read_text())
            print(f"{method}: {results[method]['seconds']:.1f} s, peak RSS {results[method]['peak_rss_gib']:.2f} GiB",
                  flush=True)
        a, b = np.load(out / "monai.npy"), np.load(out / "voxseg.npy")
        label_dice = _dice_foreground(a, b)
        per_label = {int(v): _dice_foreground(a == v, b == v) for v in np.union1d(np.unique(a), np.unique(b)) if v}
    speedup = results["monai"]["seconds"] / results["voxseg"]["seconds"]
    print(f"\ncase {args.case.name}, window {WINDOW}, overlap {OVERLAP}, {args.threads} threads, "
          f"weights: {args.run or 'default unet, seeded random'}")
    print(f"{'method':<10}{'seconds':>10}{'peak RSS GiB':>14}")
    for method in ("monai", "voxseg"):
        print(f"{method:<10}{results[method]['seconds']:>10.1f}{results[method]['peak_rss_gib']:>14.2f}")
    print(f"speedup {speedup:.2f}x; foreground label Dice between the two maps {label_dice:.4f}; per label "
          + ", ".join(f"{k}: {v:.4f}" for k, v in per_label.items()))
    print(json.dumps({"speedup_vs_monai": round(speedup, 3), "label_dice": round(label_dice, 4),
                      "peak_rss_gib": round(results["voxseg"]["peak_rss_gib"], 3),
                      "voxseg_seconds": round(results["voxseg"]["seconds"], 1),
                      "monai_seconds": round(results["monai"]["seconds"], 1),
                      "monai_peak_rss_gib": round(results["monai"]["peak_rss_gib"], 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
