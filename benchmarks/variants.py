"""Every 3-D network preset trained for the same short CPU budget on hippocampus (issue: U-Net family).

For each preset: parameters, forward GFLOPs for the planned patch, median seconds per training
iteration, and Dice on the held-out 20% (seeded split by case, full chain: predict NIfTI, evaluate).
All presets get the same budget, data, loss (Dice + CE), optimiser and seed; each keeps its own
paper's architecture (width, depth, norm), so bigger networks do fewer iterations in the budget —
that trade-off is what the table shows (so the patch is planned for memory only, `min_iterations=None`:
the time planner would shrink the slow presets' patches). By default every preset gets base width 16 (its depth, blocks,
norms, attention and up/down-sampling unchanged), since the papers' widths (32-64) cannot be trained
usefully in minutes on a CPU; `--base-width 0` keeps each preset's own width. The optimiser is
Adam (lr 1e-3, poly decay over the budget as in the pipeline): within a few hundred iterations SGD 0.01 with
poly decay tends to stay at the all-background solution, which would make the table compare nothing.

Usage:
    python benchmarks/variants.py [--minutes 5] [--presets unet,resunet,...]

The last line is a JSON object {preset: {params, gflops, seconds_per_iteration, dice_mean, ...}}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from _heldout import REPO, SHARED_DATA, train_and_test
from _results import save_result
from voxseg.nets import NETWORKS, build_network, count_parameters, estimate_flops
from voxseg.config import NetworkConfig, TrainConfig, TrainOptions


def _three_d_presets() -> list[str]:
    return [name for name, spec in NETWORKS.items() if 3 in spec.spatial_dims]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "hippocampus")
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per preset")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--presets", default=",".join(_three_d_presets()))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "variants")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--base-width", type=int, default=16,
                        help="base width given to every preset (0: each preset's own, e.g. 32-64, which a 2-core "
                             "CPU cannot train usefully in minutes); depth, blocks, norms stay the preset's")
    args = parser.parse_args()
    if not args.data.exists():
        print(f"error: {args.data}: hippocampus data not found (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    rows = {}
    for name in [p for p in args.presets.split(",") if p]:
        print(f"== {name}: {NETWORKS[name].reference}", flush=True)
        overrides = {"base_width": args.base_width} if args.base_width else {}
        train = TrainConfig(epochs=100_000, iterations_per_epoch=25, time_budget_minutes=args.minutes, val_fraction=0.0,
                            seed=args.seed, num_threads=args.threads, optimizer=args.optimizer, lr=args.lr)
        options = TrainOptions(network=NetworkConfig(name, kwargs=overrides), train=train, min_iterations=None)
        held = train_and_test(args.data, args.out / name, options, {"anterior": [1], "posterior": [2]}, args.seed,
                              progress=False)
        plan = held.plan
        model = build_network(name, 3, len(plan.channel_names), plan.num_outputs, **plan.network.kwargs)
        patch = tuple(plan.train.patch_size)
        dice = {s: held.summary["metrics"][s]["dice"]["mean"] for s in ("anterior", "posterior")}
        rows[name] = {
            "params": count_parameters(model),
            "gflops": round(estimate_flops(model, (len(plan.channel_names),) + patch) / 1e9, 2),
            "patch": list(patch),
            "iterations": held.train.iterations,
            "seconds_per_iteration": round(held.train.elapsed_minutes * 60 / max(held.train.iterations, 1), 3),
            "dice_anterior": round(dice["anterior"], 4),
            "dice_posterior": round(dice["posterior"], 4),
            "dice_mean": round((dice["anterior"] + dice["posterior"]) / 2, 4),
        }
        print(json.dumps({name: rows[name]}), flush=True)
    header = f"{'preset':<16}{'params (M)':>11}{'GFLOPs':>9}{'patch':>14}{'s/iter':>8}{'iters':>7}{'Dice ant':>10}" \
             f"{'Dice post':>10}{'Dice mean':>10}"
    print(f"\nsame budget for each: {args.minutes} min on {args.threads} CPU threads; held-out Dice (seeded 80/20); "
          f"base width {args.base_width or 'of each preset'}; {args.optimizer} lr {args.lr}")
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        print(f"{name:<16}{r['params'] / 1e6:>11.2f}{r['gflops']:>9.1f}{'x'.join(map(str, r['patch'])):>14}"
              f"{r['seconds_per_iteration']:>8.2f}{r['iterations']:>7}{r['dice_anterior']:>10.3f}"
              f"{r['dice_posterior']:>10.3f}{r['dice_mean']:>10.3f}")
    print(json.dumps(rows))
    save_result("variants", rows, sys.argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
