"""Planning for a time budget (the planner's time half): does shrinking the patch until a short budget holds
enough steps raise held-out Dice?

For each budget, two runs on the same seeded 80/20 split of ../shared/data/hippocampus, with everything else
equal (the CPU default U-Net, Adam 1e-3 with poly decay over the budget, flips, last weights, no TTA):
- "memory": the patch planned from the median case shape and the memory budget alone (what voxseg did before);
- "time": the same, then shrunk (longest axis first) until a training step timed on this machine lets the
  budget hold --min-iterations steps (``TrainOptions.min_iterations``).
Prints the patch, the measured seconds per iteration of the whole run, the iterations done and held-out Dice.

Usage:
    python benchmarks/time_budget.py [--minutes 2,5] [--min-iterations 1000] [--data PATH]

The last line is a JSON object {budget: {plan: {patch, iterations, seconds_per_iteration, dice_mean}}}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from _heldout import REPO, SHARED_DATA, train_and_test
from _results import save_result
from voxseg.config import TrainConfig, TrainOptions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "hippocampus")
    parser.add_argument("--minutes", default="2,5", help="training budgets, comma-separated")
    parser.add_argument("--min-iterations", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "time_budget")
    args = parser.parse_args()
    if not args.data.exists():
        print(f"error: {args.data}: hippocampus data not found (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    structures = {"anterior": [1], "posterior": [2]}
    results: dict[str, dict] = {}
    rows = []
    for minutes in [float(m) for m in args.minutes.split(",")]:
        for name, min_iterations in (("memory", None), ("time", args.min_iterations)):
            train = TrainConfig(epochs=100_000, iterations_per_epoch=50, time_budget_minutes=minutes,
                                optimizer="adam", val_fraction=0.0, seed=args.seed, num_threads=args.threads)
            options = TrainOptions(train=train, min_iterations=min_iterations)
            held = train_and_test(args.data, args.out / f"{minutes:g}min_{name}", options, structures, args.seed,
                                  progress=False)
            dice = {s: held.summary["metrics"][s]["dice"]["mean"] for s in structures}
            run = held.train
            row = {"patch": held.plan.train.patch_size, "iterations": run.iterations,
                   "seconds_per_iteration": round(60 * run.elapsed_minutes / max(run.iterations, 1), 3),
                   "dice_anterior": round(dice["anterior"], 4), "dice_posterior": round(dice["posterior"], 4),
                   "dice_mean": round(sum(dice.values()) / len(dice), 4)}
            results.setdefault(f"{minutes:g}", {})[name] = row
            rows.append((f"{minutes:g}", name, row))
            print(f"{minutes:g} min, {name}: {row}", flush=True)
    print(f"\n{'budget':>7} {'plan':<7} {'patch':<12} {'s/it':>6} {'iters':>6} {'ant':>7} {'post':>7} {'mean':>7}")
    for minutes, name, row in rows:
        print(f"{minutes + ' min':>7} {name:<7} {'x'.join(map(str, row['patch'])):<12} "
              f"{row['seconds_per_iteration']:>6.3f} {row['iterations']:>6} {row['dice_anterior']:>7.4f} "
              f"{row['dice_posterior']:>7.4f} {row['dice_mean']:>7.4f}")
    print(json.dumps(results))
    save_result("time_budget", results, sys.argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
