"""BraTS region benchmark (issue: inference at full strength): train the region scheme (sigmoid WT/TC/ET)
on 10 of the 14 cases in ../shared/data/brats2018 within a budget on 2 CPU threads, predict the other 4
through the full chain (BraTS labels 0/1/2/4 written in the input geometry), evaluate per region.

By default it trains as ``voxseg train DATA --label-scheme brats --time-budget MINUTES`` would and prints what the
planner chose (docs/training.md, "How the planner chooses"); ``--explicit`` trains with the settings below instead.
The explicit settings: N4 bias-field correction of every channel (Archit & Adilina 2022), resampling
to 2 mm (8x fewer voxels, a 64^3 patch then sees 128 mm, most of the brain), a 5-stage U-Net with base width 16
and deep supervision, Dice + BCE, batch 2, Adam 1e-3 with poly decay over the budget, the full augmentation
chain (nnU-Net's plus axial rot90s), all 16 flip x axial-rot90 TTA variants at prediction (Henry et al. 2021; the figures
with the 8 flips and without TTA are printed too). A 64^3 patch is the largest that leaves an hour of CPU
training thousands of iterations. No post-processing by default: rules are kept only if they raise
cross-validation Dice, and no k-fold fits the budget. ``--postprocess`` chooses them on the model's predictions
of its own training cases instead (in-sample, so it favours "largest component").

Variants the options try: ``--no-crop`` (patches also show the background outside the head),
``--overhang 0.5`` (training patches may reach half a patch beyond the cropped volume, zero-filled, so the
network sees the brain at many window positions; without it a 64^3 patch in a ~73x83x72 crop moves by only
~20 voxels), ``--net-args ...,norm=batch``. How the trained models' labels depend on the window grid:
benchmarks/inference.py and benchmarks/window_placement.py. Current figures: docs/benchmarks.md.

Usage:
    python benchmarks/brats.py [--minutes 60] [--spacing 1.5]

The last line is a JSON object with dice_wt, dice_tc, dice_et, train_minutes (and HD95 per region).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from _defaults import chosen_plan, default_options, print_plan, quick_options
from _heldout import REPO, SHARED_DATA, train_and_test
from _results import save_result
from voxseg.data.labels import LabelScheme
from voxseg.cli import user_errors
from voxseg.data.preprocess import PreprocessConfig
from voxseg.metrics import format_summary
from voxseg.config import NetworkConfig, TrainConfig, TrainOptions


@user_errors
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "brats2018")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--spacing", type=float, default=2.0, help="resampling in mm (0: none)")
    parser.add_argument("--patch", default="64,64,64")
    parser.add_argument("--net-args", default="base_width=16,depth=5,deep_supervision=1")
    parser.add_argument("--tta", default="all", help="none, flips or all (flips x axial rot90, 16 variants)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--lr", type=float, default=None, help="default: 0.01 for sgd, 1e-3 otherwise")
    parser.add_argument("--augment", default="default", help="augmentation preset: none, flips or default (full chain)")
    parser.add_argument("--no-n4", action="store_true", help="no N4 bias-field correction")
    parser.add_argument("--overhang", type=float, default=0.0,
                        help="how far training patches may reach beyond the cropped volume (fraction of the patch)")
    parser.add_argument("--no-crop", action="store_true",
                        help="no crop to the nonzero box (patches then also show the background outside the head)")
    parser.add_argument("--postprocess", action="store_true",
                        help="choose post-processing on the model's predictions of its training cases")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "brats")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run in OUT/run (its budget counts minutes already trained)")
    parser.add_argument("--explicit", action="store_true",
                        help="train with the settings given here (--spacing, --optimizer, ...) instead of the "
                             "planner's defaults (voxseg train --label-scheme brats --time-budget MINUTES)")
    parser.add_argument("--quick", action="store_true", help="a smoke test (under 2 minutes on 2 cores): 0.3 minutes of training, no step timing, no N4, no TTA; nothing saved")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.tta = 0.3, "none"
    if not 0.0 <= args.overhang <= 0.5:
        parser.error(f"--overhang must be in [0, 0.5], got {args.overhang}")
    if not args.data.exists():
        print(f"error: {args.data}: BraTS data not found (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    if args.resume and not (args.out / "run" / "checkpoint_last.pt").exists():
        print(f"error: {args.out / 'run'}: nothing to resume (no checkpoint_last.pt)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    spacing = (args.spacing,) * 3 if args.spacing else None
    net_kwargs = {k: int(v) if v.lstrip("-").isdigit() else v
                  for k, v in (item.split("=") for item in args.net_args.split(",") if item)}
    preprocess = PreprocessConfig(target_spacing=spacing, n4=not args.no_n4, crop_to_nonzero=not args.no_crop)
    train = TrainConfig(loss="dice+ce", epochs=100_000, iterations_per_epoch=50, time_budget_minutes=args.minutes,
                        batch_size=2, patch_size=[int(p) for p in args.patch.split(",")], val_fraction=0.0,
                        seed=args.seed, num_threads=args.threads, optimizer=args.optimizer, lr=args.lr,
                        patch_overhang=args.overhang or 0.0)
    options = TrainOptions(network=NetworkConfig(kwargs=net_kwargs), train=train, label_scheme="brats",
                           preprocess=preprocess, augment=args.augment)
    if not args.explicit:  # as `voxseg train DATA --label-scheme brats --time-budget MINUTES` would
        options = default_options(args.minutes, args.threads, args.seed, label_scheme="brats")
    if args.quick:
        options = quick_options(options)
    structures = LabelScheme("brats").structures()
    held = train_and_test(args.data, args.out, options, structures, args.seed, test_fraction=4 / 14,
                          tta=("none",) if args.quick else tuple(dict.fromkeys((args.tta, "flips", "none"))),
                          postprocess=args.postprocess, resume=args.resume)
    raw = held.summary
    summary = held.summaries.get(f"{args.tta}+pp", raw)
    print_plan(held.plan)
    print(f"{held.n_train} training cases, {held.n_test} held-out cases")
    print(format_summary(summary))
    figures = {f"dice_{r.lower()}": round(summary["metrics"][r]["dice"]["mean"], 4) for r in ("WT", "TC", "ET")}
    figures.update({f"hd95_{r.lower()}_mm": round(summary["metrics"][r]["hd95_mm"]["mean"], 2)
                    for r in ("WT", "TC", "ET")})
    figures.update({"train_minutes": round(held.train.elapsed_minutes, 2), "iterations": held.train.iterations,
                    "held_out_cases": held.n_test, "patch": held.plan.train.patch_size})
    print(f"{'region':<8}{'Dice':>8}{'HD95 mm':>10}   (published GPU pipelines, hundreds of cases: WT 0.90, TC 0.85, "
          f"ET 0.80)")
    for r in ("WT", "TC", "ET"):
        print(f"{r:<8}{figures[f'dice_{r.lower()}']:>8.3f}{figures[f'hd95_{r.lower()}_mm']:>10.2f}")
    for setting in ("flips", "none"):
        if setting != args.tta and setting in held.summaries:
            other = held.summaries[setting]
            figures.update({f"dice_{r.lower()}_tta_{setting}": round(other["metrics"][r]["dice"]["mean"], 4)
                            for r in ("WT", "TC", "ET")})
            print(f"TTA {setting}: " + ", ".join(f"{r} {figures[f'dice_{r.lower()}_tta_{setting}']:.3f}"
                                                 for r in ("WT", "TC", "ET")))
    figures["tta"] = args.tta
    figures.update({"explicit": args.explicit, "plan": chosen_plan(held.plan)})
    figures.update({"postprocessing": held.postprocessing,
                    "crop_to_nonzero": not args.no_crop, "patch_overhang": args.overhang})
    if args.postprocess:
        figures.update({f"dice_{r.lower()}_no_postprocessing": round(raw["metrics"][r]["dice"]["mean"], 4)
                        for r in ("WT", "TC", "ET")})
        print("without post-processing: " + ", ".join(f"{r} {figures[f'dice_{r.lower()}_no_postprocessing']:.3f}"
                                                      for r in ("WT", "TC", "ET")))
    print(json.dumps(figures))
    if not args.quick:
        save_result("brats" if not args.explicit else "brats_explicit", figures, sys.argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
