"""GPU benchmark: train and predict hippocampus on one CUDA GPU.

Trains voxseg's default pipeline on ../shared/data/hippocampus (Medical Segmentation Decathlon Task04) on
CUDA for a time budget (``--minutes``), with the seeded 80/20 split by case of ``benchmarks/_heldout.py``,
through ``voxseg.runs.run_training`` (``device="cuda"``); then predicts the held-out cases on CUDA through the
full chain (NIfTI in, NIfTI in the input geometry out; weights loaded onto the GPU, windows blended there)
and evaluates Dice of anterior (label 1) and posterior (label 2) hippocampus with the last checkpoint.

Prints a table (train minutes, iterations, predict seconds per case, peak GPU memory of training and of
prediction from ``torch.cuda.max_memory_allocated``, Dice) and ends with one JSON line. Without a CUDA GPU
it prints one line saying so and exits 0 without training; without the data, an error line and exit 2.

Usage:
    python benchmarks/gpu.py [--data PATH] [--minutes 5] [--out benchmarks/results/gpu]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from _heldout import REPO, SHARED_DATA, split_dataset
from _results import save_result
from voxseg.infer import PredictOptions, load_model, predict_cases
from voxseg.metrics import evaluate_folders
from voxseg.config import TrainConfig, TrainOptions
from voxseg.runs import run_training

DEFAULT_DATA = SHARED_DATA / "hippocampus"
STRUCTURES = {"anterior": [1], "posterior": [2]}


def _peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--minutes", type=float, default=5.0, help="training time budget (minutes)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu")
    parser.add_argument("--seed", type=int, default=0, help="seed of the 80/20 split and of training")
    parser.add_argument("--amp", default="auto", help="mixed precision: auto (fp16 on CUDA), fp16, none")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU is available (torch.cuda.is_available() is False): nothing to benchmark")
        return 0
    if not args.data.exists():
        print(f"error: {args.data}: hippocampus data not found (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    train_ids, test_cases = split_dataset(args.data, args.seed)
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    options = TrainOptions(train=TrainConfig(epochs=100_000, iterations_per_epoch=100, time_budget_minutes=args.minutes,
                                             amp=args.amp, val_fraction=0.0, seed=args.seed, device="cuda"),
                           include_cases=train_ids, skip_invalid=True)
    torch.cuda.reset_peak_memory_stats()
    result = run_training(args.data, args.out / "run", options, overwrite=True, progress=False)
    train_peak = _peak_gib()

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model, plan = load_model(args.out / "run", which="last", device="cuda")
    pred, refs = args.out / "pred", args.out / "ref"
    refs.mkdir()
    for case in test_cases:
        (refs / f"{case.case_id}.nii.gz").symlink_to(Path(case.label_path).resolve())
    start = time.perf_counter()
    predicted = predict_cases(model, plan, test_cases, pred, progress=False, options=PredictOptions(),
                              device=torch.device("cuda"))
    predict_seconds = (time.perf_counter() - start) / max(len(predicted), 1)
    predict_peak = _peak_gib()
    _, summary = evaluate_folders(pred, refs, pred, STRUCTURES, progress=False)
    dice = {name: summary["metrics"][name]["dice"]["mean"] for name in STRUCTURES}

    print(f"device: {torch.cuda.get_device_name(0)}; split (seed {args.seed}): {len(train_ids)} training cases, "
          f"{len(test_cases)} held-out cases")
    print(f"{'what':<32}{'value':>10}")
    for name, value in [("train minutes", result.elapsed_minutes), ("iterations", result.iterations),
                        ("predict seconds per case", predict_seconds), ("peak GPU GiB, training", train_peak),
                        ("peak GPU GiB, prediction", predict_peak), ("Dice anterior", dice["anterior"]),
                        ("Dice posterior", dice["posterior"]), ("Dice mean", sum(dice.values()) / 2)]:
        print(f"{name:<32}{value:>10.3f}")
    figures = {"device": torch.cuda.get_device_name(0), "train_minutes": round(result.elapsed_minutes, 2),
               "iterations": result.iterations, "predict_seconds_per_case": round(predict_seconds, 3),
                      "peak_gpu_gib_train": round(train_peak, 3), "peak_gpu_gib_predict": round(predict_peak, 3),
                      "dice_anterior": round(dice["anterior"], 4), "dice_posterior": round(dice["posterior"], 4),
                      "dice_mean": round(sum(dice.values()) / 2, 4), "held_out_cases": len(test_cases),
                      "patch": plan.train.patch_size, "batch_size": plan.train.batch_size, "amp": plan.train.amp}
    print(json.dumps(figures))
    save_result("gpu", figures, sys.argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
