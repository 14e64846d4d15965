"""IBSR18 brain tissue benchmark (issue 22): train as ``voxseg train`` would, with the user's defaults (a time
budget, ``--label-names CSF,GM,WM``), on a seeded split of the 10 labelled cases of
../shared/data/ibsr18/Training_Set (7 training / 3 held out), predict the held-out cases through the full chain and
report Dice and HD95 of CSF, GM and WM.

Usage:
    python benchmarks/ibsr.py [--minutes 30] [--quick] [--val-fraction 0]

The last line is a JSON object with dice_csf, dice_gm, dice_wm, train_minutes and the chosen plan.
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
from voxseg.cli import user_errors
from voxseg.metrics import format_summary

NAMES = ("CSF", "GM", "WM")


@user_errors
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "ibsr18" / "Training_Set")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a smoke test (under 2 minutes on 2 cores): 0.3 minutes of training, no step timing; nothing saved")
    parser.add_argument("--val-fraction", type=float, default=None,
                        help="validation split given explicitly (saved as the ibsr_explicit row); default: voxseg's")
    parser.add_argument("--augment", default=None,
                        help="train with this augmentation preset (none, flips, default) and the planner's other "
                             "choices, as `voxseg train DATA --time-budget MINUTES --augment PRESET` would; saved as "
                             "the ibsr_augment row")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run in OUT/run (its budget counts minutes already trained), "
                             "then predict and evaluate")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ibsr")
    args = parser.parse_args()
    if not args.data.exists():
        print(f"error: {args.data}: IBSR18 data not found (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    if args.resume and not (args.out / "run" / "checkpoint_last.pt").exists():
        print(f"error: {args.out / 'run'}: nothing to resume (no checkpoint_last.pt)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    minutes = 0.3 if args.quick else args.minutes
    options = default_options(minutes, args.threads, args.seed, label_names=list(NAMES))
    if args.val_fraction is not None:
        options.train = dataclasses.replace(options.train, val_fraction=args.val_fraction)
    if args.augment is not None:
        options = dataclasses.replace(options, augment=args.augment)
    if args.quick:
        options = quick_options(options)
    held = train_and_test(args.data, args.out, options, {n: [v] for v, n in enumerate(NAMES, 1)}, args.seed,
                          which="best", test_fraction=0.3, tta=("none",) if args.quick else ("auto", "none"),
                          resume=args.resume)
    print(f"{held.n_train} training cases, {held.n_test} held-out cases")
    print_plan(held.plan)
    print(format_summary(held.summary))
    metrics = held.summary["metrics"]
    figures = {f"dice_{n.lower()}": round(metrics[n]["dice"]["mean"], 4) for n in NAMES}
    figures.update({f"hd95_{n.lower()}_mm": round(metrics[n]["hd95_mm"]["mean"], 2) for n in NAMES})
    figures.update({"train_minutes": round(held.train.elapsed_minutes, 2), "iterations": held.train.iterations,
                    "held_out_cases": held.n_test, "tta": "none" if args.quick else "auto",
                    "predict_seconds_per_case": round(60 * held.predict_minutes / held.n_test, 1)})
    if "none" in held.summaries and not args.quick:  # what --tta none gives, and its time
        plain = held.summaries["none"]["metrics"]
        figures.update({f"dice_{n.lower()}_no_tta": round(plain[n]["dice"]["mean"], 4) for n in NAMES})
        figures["predict_seconds_per_case_no_tta"] = round(60 * held.predict_minutes_by_tta["none"] / held.n_test, 1)
        print("without TTA: " + ", ".join(f"{n} {figures[f'dice_{n.lower()}_no_tta']:.3f}" for n in NAMES))
    figures["plan"] = chosen_plan(held.plan)
    print(f"{'class':<8}{'Dice':>8}{'HD95 mm':>10}")
    for n in NAMES:
        print(f"{n:<8}{figures[f'dice_{n.lower()}']:>8.3f}{figures[f'hd95_{n.lower()}_mm']:>10.2f}")
    print(json.dumps(figures))
    if not args.quick:
        name = "ibsr_explicit" if args.val_fraction is not None else "ibsr_augment" if args.augment else "ibsr"
        save_result(name, figures, sys.argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
