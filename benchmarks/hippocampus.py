"""Hippocampus quality benchmark (issue: voxseg end to end).

Trains as ``voxseg train`` would, with the user's defaults and the planner's choices (printed; ``--explicit``
trains with the settings given here instead), on ../shared/data/hippocampus (Medical Segmentation Decathlon Task04)
with a fixed, seeded 80/20 split by case, within a training-time budget on 2 CPU threads, then
predicts the held-out 20% through the full chain (files in, NIfTI in the input geometry out) and
evaluates Dice of anterior (label 1) and posterior (label 2) hippocampus.

The held-out cases are never seen in training nor used to pick a checkpoint (the last checkpoint
is evaluated). For scale: nnU-Net after full GPU training reports about 0.90 / 0.89 on this task (Isensee et
al. 2021), with a different split and far more compute.

Usage:
    python benchmarks/hippocampus.py [--data PATH] [--minutes 30] [--out benchmarks/results/hippocampus]

The last line printed is a JSON object with dice_anterior, dice_posterior and train_minutes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from _defaults import chosen_plan, default_options, print_plan, quick_options
from _heldout import REPO, SHARED_DATA, train_and_test
from _results import save_result
from voxseg.metrics import format_summary
from voxseg.config import NetworkConfig, TrainConfig, TrainOptions

DEFAULT_DATA = SHARED_DATA / "hippocampus"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--minutes", type=float, default=30.0, help="training time budget (default 30)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="train exactly this many epochs of 100 iterations instead of a time budget (with "
                             "--amp none the figures then depend on the seed alone, not on the machine's speed)")
    parser.add_argument("--amp", default="auto", help="mixed precision: auto, bf16, none")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "hippocampus")
    parser.add_argument("--seed", type=int, default=0, help="seed of the 80/20 split and of training")
    parser.add_argument("--net-args", default=None,
                        help="network overrides, k=v,... (with --explicit, default base_width=16,depth=4,"
                             "deep_supervision=1; without it, as `voxseg train --net-args` would: the planner fills "
                             "the rest)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--tta", default="flips", help="test-time augmentation of the reported figure "
                        "(none, flips, all); the figure without TTA is printed too")
    parser.add_argument("--explicit", action="store_true",
                        help="train with the settings given here (--net-args, --optimizer, ...) instead of the "
                             "planner's defaults, as a second row")
    parser.add_argument("--augment", default=None,
                        help="train with this augmentation preset (none, flips, default) and the planner's other "
                             "choices, as `voxseg train DATA --time-budget MINUTES --augment PRESET` would; saved as "
                             "the hippocampus_augment row")
    parser.add_argument("--row", default=None,
                        help="save the result under this name (default: hippocampus, hippocampus_explicit with "
                             "--explicit, hippocampus_augment with --augment, hippocampus_network with --net-args)")
    parser.add_argument("--quick", action="store_true", help="a smoke test (under 2 minutes on 2 cores): 0.3 minutes of training, no step timing; nothing saved")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.epochs = 0.3, None
    if not args.data.exists():
        print(f"error: {args.data}: hippocampus data not found (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    net_args = args.net_args if args.net_args is not None else "base_width=16,depth=4,deep_supervision=1"
    try:
        net_kwargs = {k: int(v) for k, v in (item.split("=") for item in net_args.split(",") if item)}
    except ValueError:
        print(f"error: --net-args {net_args}: expected key=integer pairs separated by commas, e.g. base_width=32",
              file=sys.stderr)
        return 2
    train = TrainConfig(epochs=args.epochs or 100_000, iterations_per_epoch=100,
                        time_budget_minutes=None if args.epochs else args.minutes, amp=args.amp,
                        batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr, val_fraction=0.0,
                        seed=args.seed, num_threads=args.threads)
    options = TrainOptions(network=NetworkConfig(kwargs=net_kwargs), train=train)
    if not args.explicit:  # as `voxseg train DATA --time-budget MINUTES` (or --epochs N) would
        options = default_options(None if args.epochs else args.minutes, args.threads, args.seed)
        if args.epochs:
            options.train.epochs, options.train.iterations_per_epoch = args.epochs, 100
        if args.net_args is not None:
            options = dataclasses.replace(options, network=NetworkConfig(kwargs=net_kwargs))
    if args.augment is not None:
        options = dataclasses.replace(options, augment=args.augment)
    if args.quick:
        options = quick_options(options)
    held = train_and_test(args.data, args.out, options, {"anterior": [1], "posterior": [2]}, args.seed,
                          tta=(args.tta, "none") if args.tta != "none" else ("none",))
    summary, result, plan, predict_minutes = held.summary, held.train, held.plan, held.predict_minutes
    print_plan(plan)
    print(f"split (seed {args.seed}): {held.n_train} training cases, {held.n_test} held-out cases")
    print(format_summary(summary))
    dice_a = summary["metrics"]["anterior"]["dice"]["mean"]
    dice_p = summary["metrics"]["posterior"]["dice"]["mean"]
    plain = held.summaries.get("none", summary)
    print(f"{'what':<28}{'value':>10}")
    for name, value in [("train minutes", result.elapsed_minutes), ("iterations", result.iterations),
                        ("predict minutes (held-out)", predict_minutes), ("Dice anterior", dice_a),
                        ("Dice posterior", dice_p), ("Dice mean", (dice_a + dice_p) / 2),
                        ("Dice anterior, no TTA", plain["metrics"]["anterior"]["dice"]["mean"]),
                        ("Dice posterior, no TTA", plain["metrics"]["posterior"]["dice"]["mean"])]:
        print(f"{name:<28}{value:>10.3f}")
    figures = {"dice_anterior": round(dice_a, 4), "dice_posterior": round(dice_p, 4),
               "dice_mean": round((dice_a + dice_p) / 2, 4), "train_minutes": round(result.elapsed_minutes, 2),
               "iterations": result.iterations, "held_out_cases": held.n_test,
               "net": plan.network.name, "net_kwargs": plan.network.kwargs, "patch": plan.train.patch_size,
               "batch_size": plan.train.batch_size, "amp": plan.train.amp, "tta": args.tta,
               "dice_anterior_no_tta": round(plain["metrics"]["anterior"]["dice"]["mean"], 4),
               "dice_posterior_no_tta": round(plain["metrics"]["posterior"]["dice"]["mean"], 4),
               "predict_seconds_per_case": {k: round(60 * v / held.n_test, 2)
                                            for k, v in held.predict_minutes_by_tta.items()},
               "explicit": args.explicit, "plan": chosen_plan(plan)}
    print(json.dumps(figures))
    if not args.quick:
        name = args.row or ("hippocampus_explicit" if args.explicit else
                            "hippocampus_augment" if args.augment else
                            "hippocampus_network" if args.net_args is not None else "hippocampus")
        save_result(name, figures, sys.argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
