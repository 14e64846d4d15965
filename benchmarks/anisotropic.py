"""Thick slices: does planning a U-Net's strides and kernels from the voxel spacing (nnU-Net's rule,
``voxseg.plan.plan_strides``) raise held-out Dice, and how do 2-D and 2.5-D slices compare, in the same time?

The data: ../shared/data/hippocampus made thick-sliced by keeping every ``--every``-th slice along the
scanner's S axis (default 4: 1 x 1 x 4 mm voxels, ~9 slices a case), images and labels alike, written once
beside the results. Real anatomy and expert labels, the geometry of a clinical thick-slice series (without the
partial-volume blur a real thick slice has). The same seeded 80/20 split by case for every run, the CPU
default U-Net (base width 16, deep supervision), Adam 1e-3 with poly decay over the same time budget, flips,
last weights, no TTA; predictions are written in the thick-slice geometry and scored there. Runs:

- ``3d planned``: voxseg's default, strides and kernels planned for the 4 mm slices;
- ``3d isotropic``: strides 2 and kernels 3 along every axis (what voxseg planned before);
- ``2d``: slices of the in-plane axes (``--dims 2``);
- ``2.5d``: 2-D slices with their two neighbours as channels (``--mode 2.5d``);
- ``mixed resampled`` / ``mixed own grids``: another copy in which only the odd-numbered cases lose every second
  slice (1 x 1 x 2 mm beside 1 mm cases), trained resampled to nnU-Net's target spacing (``spacing="auto"``,
  ``--spacing auto``) and on each case's own grid (``"none"``, voxseg's default).

Usage:
    python benchmarks/anisotropic.py [--minutes 5] [--every 4] [--data PATH]

The last line is a JSON object {run: {patch, strides, iterations, dice_anterior, dice_posterior, dice_mean}}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from _heldout import REPO, SHARED_DATA, train_and_test
from _results import save_result
from voxseg.config import NetworkConfig, TrainConfig, TrainOptions


def thick_slice_copy(src: Path, dst: Path, every: int, odd_cases_only: bool = False) -> Path:
    """``src`` (images/, labels/) with every ``every``-th slice of the S axis kept, the affine's slice step
    scaled to match (its origin unchanged), written to ``dst`` once; with ``odd_cases_only`` only the cases
    whose number is odd, the others copied as they are (a dataset of mixed spacings)."""
    if (dst / "done").exists():
        return dst
    for sub in ("images", "labels"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
        for path in sorted((src / sub).glob("*.nii.gz")):
            img = nib.load(str(path))
            if odd_cases_only and int("".join(c for c in path.name.split(".")[0] if c.isdigit()) or 0) % 2 == 0:
                nib.save(img, str(dst / sub / path.name))
                continue
            axis = "".join(nib.aff2axcodes(img.affine)).find("S")
            if axis < 0:
                axis = "".join(nib.aff2axcodes(img.affine)).find("I")
            data = np.asanyarray(img.dataobj)
            keep = [slice(None)] * data.ndim
            keep[axis] = slice(0, None, every)
            affine = img.affine.copy()
            affine[:3, axis] *= every
            out = nib.Nifti1Image(np.ascontiguousarray(data[tuple(keep)]), affine, img.header)
            out.set_qform(affine)
            out.set_sform(affine)
            nib.save(out, str(dst / sub / path.name))
    (dst / "done").write_text("")
    return dst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "hippocampus")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--every", type=int, default=4, help="keep every N-th slice (N mm slices from 1 mm)")
    parser.add_argument("--runs", default="3d planned,3d isotropic,2d,2.5d,mixed resampled,mixed own grids")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "anisotropic")
    args = parser.parse_args()
    if not args.data.exists():
        print(f"error: {args.data}: hippocampus data not found (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    data = thick_slice_copy(args.data, args.out / f"data_every{args.every}", args.every)
    mixed = thick_slice_copy(args.data, args.out / "data_mixed", 2, odd_cases_only=True)
    structures = {"anterior": [1], "posterior": [2]}
    runs = {
        "3d planned": dict(),
        "3d isotropic": dict(network=NetworkConfig(kwargs={"strides": [[2, 2, 2]] * 4, "kernel_sizes": [[3, 3, 3]] * 5})),
        "2d": dict(network=NetworkConfig(spatial_dims=2)),
        "2.5d": dict(network=NetworkConfig(spatial_dims=2), mode="2.5d"),
        "mixed resampled": dict(spacing="auto"),
        "mixed own grids": dict(spacing="none"),
    }
    results, rows = {}, []
    for name in [r.strip() for r in args.runs.split(",")]:
        choice = dict(runs[name])
        train = TrainConfig(epochs=100_000, iterations_per_epoch=50, time_budget_minutes=args.minutes, optimizer="adam",
                            val_fraction=0.0, seed=args.seed, num_threads=args.threads, mode=choice.pop("mode", "3d"))
        options = TrainOptions(train=train, **choice)
        held = train_and_test(mixed if name.startswith("mixed") else data, args.out / name.replace(" ", "_").replace(".", "_"), options, structures,
                              args.seed, progress=False)
        dice = {s: held.summary["metrics"][s]["dice"]["mean"] for s in structures}
        kw = held.plan.network.kwargs
        row = {"patch": held.plan.train.patch_size, "strides": kw.get("strides", "2 everywhere"),
               "iterations": held.train.iterations,
               "dice_anterior": round(dice["anterior"], 4), "dice_posterior": round(dice["posterior"], 4),
               "dice_mean": round(sum(dice.values()) / len(dice), 4)}
        results[name] = row
        rows.append((name, row))
        print(f"{name}: {row}", flush=True)
    print(f"\n1 x 1 x {args.every} mm hippocampus (mixed: half the cases 1 x 1 x 2 mm), {args.minutes:g} min each, "
          f"{args.threads} threads")
    print(f"{'run':<14} {'patch':<12} {'iters':>6} {'ant':>7} {'post':>7} {'mean':>7}")
    for name, row in rows:
        print(f"{name:<14} {'x'.join(map(str, row['patch'])):<12} {row['iterations']:>6} {row['dice_anterior']:>7.4f} "
              f"{row['dice_posterior']:>7.4f} {row['dice_mean']:>7.4f}")
    print(json.dumps(results))
    save_result("anisotropic", results, sys.argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
