"""Hippocampus quality benchmark (issue: voxseg end to end).

Trains voxseg's default pipeline on ../shared/data/hippocampus (Medical Segmentation Decathlon Task04)
with a fixed, seeded 80/20 split by case, within a training-time budget on 2 CPU threads, then
predicts the held-out 20% through the full chain (files in, NIfTI in the input geometry out) and
evaluates Dice of anterior (label 1) and posterior (label 2) hippocampus.

The held-out cases are never seen in training nor used to pick a checkpoint (the last checkpoint
is evaluated). References measured on this CPU with the same budget (other held-out cases): a plain
MONAI DynUNet loop 0.83 (fp32) / 0.86 (bf16); published nnU-Net after full GPU training ~0.90/0.89.

Usage:
    python benchmarks/hippocampus.py [--data PATH] [--minutes 20] [--out benchmarks/results/hippocampus]

The last line printed is a JSON object with dice_anterior, dice_posterior and train_minutes.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from voxseg.infer import load_model, predict_cases
from voxseg.io import load_dataset
from voxseg.metrics import evaluate_folders, format_summary
from voxseg.train import TrainOptions, checked_cases, run_training, split_cases

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "hippocampus"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--minutes", type=float, default=20.0, help="training time budget")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "hippocampus")
    parser.add_argument("--seed", type=int, default=0, help="seed of the 80/20 split and of training")
    parser.add_argument("--net-args", default="base_width=16,depth=4", help="network overrides, k=v,...")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--lr", type=float, default=None)
    args = parser.parse_args()
    if not args.data.exists():
        print(f"error: {args.data}: hippocampus data not found (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    dataset = load_dataset(args.data)
    valid = checked_cases(dataset, skip_invalid=True)
    split = split_cases([c.case_id for c in valid], 0.2, args.seed)
    test_cases = [c for c in valid if c.case_id in set(split["val"])]
    print(f"split (seed {args.seed}): {len(split['train'])} training cases, {len(test_cases)} held-out cases")

    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    net_kwargs = {k: int(v) for k, v in (item.split("=") for item in args.net_args.split(",") if item)}
    options = TrainOptions(net_kwargs=net_kwargs, epochs=100_000, iterations_per_epoch=100,
                           time_budget_minutes=args.minutes, batch_size=args.batch_size, optimizer=args.optimizer,
                           lr=args.lr, val_fraction=0.0, seed=args.seed, num_threads=args.threads,
                           include_cases=split["train"], skip_invalid=True)
    result = run_training(args.data, args.out / "run", options, overwrite=True)

    start = time.perf_counter()
    model, plan = load_model(args.out / "run", which="last")
    predict_cases(model, plan, test_cases, args.out / "pred")
    predict_minutes = (time.perf_counter() - start) / 60
    refs = args.out / "ref"
    refs.mkdir()
    for case in test_cases:
        (refs / f"{case.case_id}.nii.gz").symlink_to(Path(case.label_path).resolve())
    _, summary = evaluate_folders(args.out / "pred", refs, args.out, {"anterior": [1], "posterior": [2]})
    print(format_summary(summary))
    dice_a = summary["metrics"]["anterior"]["dice"]["mean"]
    dice_p = summary["metrics"]["posterior"]["dice"]["mean"]
    iterations = sum(1 for _ in result.history) * options.iterations_per_epoch
    print(f"{'what':<28}{'value':>10}")
    for name, value in [("train minutes", result.elapsed_minutes), ("epochs x 100 iterations", len(result.history)),
                        ("predict minutes (held-out)", predict_minutes), ("Dice anterior", dice_a),
                        ("Dice posterior", dice_p), ("Dice mean", (dice_a + dice_p) / 2),
                        ("reference MONAI fp32", 0.83), ("reference MONAI bf16", 0.86)]:
        print(f"{name:<28}{value:>10.3f}")
    print(json.dumps({"dice_anterior": round(dice_a, 4), "dice_posterior": round(dice_p, 4),
                      "dice_mean": round((dice_a + dice_p) / 2, 4), "train_minutes": round(result.elapsed_minutes, 2),
                      "iterations_approx": iterations, "held_out_cases": len(test_cases),
                      "net": plan.network.name, "net_kwargs": plan.network.kwargs, "patch": plan.train.patch_size,
                      "batch_size": plan.train.batch_size, "amp": plan.train.amp}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
