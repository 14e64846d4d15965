"""Validation during training through each backend (issue 19): seconds per validation in PyTorch, in OpenVINO
(the network converted again at every validation, in memory), and with ``--val-backend auto``.

The default 3-D U-Net (or a trained run's, ``--run``) validates ``--windows`` windows of one random BraTS-size case
``--repeats`` times; between validations its weights move, as training moves them. The first validation of each
backend is listed apart: for ``auto`` it holds the one-time measurement. The Dice of each validation is compared
with PyTorch's on the same weights (the largest difference is reported).

    python benchmarks/validation_backend.py                      # 128^3 windows, 6 per validation, 3 validations
    python benchmarks/validation_backend.py --quick              # smoke run: 48^3 windows, a small network

Last line JSON: seconds per validation (median after the first) per backend, ``speedup_openvino_vs_torch``, what
``auto`` chose, ``dice_max_difference``, the CPU and the thread count; saved as
``benchmarks/results/validation_backend.json``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch
from _results import save_result

from voxseg.cli import user_errors
from voxseg.config import NetworkConfig, RunPlan, TrainConfig
from voxseg.infer import ValidationBackend, build_model, load_model, openvino_available
from voxseg.train.batches import PreparedCase
from voxseg.train.validation import validation_dice, window_starts_of

MODES = ("torch", "openvino", "auto")


def _model_and_plan(run: str | None, window: int, quick: bool) -> tuple[torch.nn.Module, RunPlan]:
    if run:
        model, plan = load_model(run)
    else:
        kwargs = {"base_width": 8, "depth": 3} if quick else {}
        plan = RunPlan(channel_names=["FLAIR", "T1", "T1ce", "T2"], label_values=[0, 1, 2, 4],
                       network=NetworkConfig("unet", 3, kwargs), train=TrainConfig())
        torch.manual_seed(0)
        model = build_model(plan)
    plan.train.patch_size = [window] * 3
    plan.inference.batch_size = 1
    return model, plan


def _case(plan: RunPlan, window: int, seed: int) -> PreparedCase:
    """A random case of 1.5 windows along each axis (8 windows at overlap 0.5), a blob of label 1 in its middle."""
    size = window * 3 // 2
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(len(plan.channel_names), size, size, size)).astype(np.float32)
    grid = np.indices((size, size, size)) - size / 2
    label = (np.sqrt((grid ** 2).sum(0)) < size / 4).astype(np.uint8)
    return PreparedCase("bench", image, label)


def _validate(mode: str, model, plan, case, starts, repeats: int, seed: int) -> dict:
    """Seconds of each validation through ``mode``, the Dice difference from PyTorch on the same weights."""
    backend, reference = ValidationBackend(mode), ValidationBackend("torch")
    generator = torch.Generator().manual_seed(seed)
    seconds, differences = [], []
    for _ in range(repeats):
        with torch.no_grad():  # a training step's worth of change
            for p in model.parameters():
                p.add_(1e-3 * torch.randn(p.shape, generator=generator))
        start = time.perf_counter()
        dice = validation_dice(model, plan, [case], torch.device("cpu"), [starts], backend)
        seconds.append(time.perf_counter() - start)
        if mode != "torch":
            ref = validation_dice(model, plan, [case], torch.device("cpu"), [starts], reference)
            differences.append(max(abs(dice[k] - ref[k]) for k in ref))
        print(f"  {mode}: validation {len(seconds)} {seconds[-1]:.1f} s on {backend.last}", flush=True)
    return {"first_s": round(seconds[0], 2), "median_s": round(statistics.median(seconds[1:] or seconds), 2),
            "ran_on": backend.last, "dice_difference": round(max(differences), 4) if differences else 0.0,
            "measured": backend.measured}


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=None, help="a trained run folder (default: the default U-Net, seeded)")
    parser.add_argument("--window", type=int, default=128, help="window edge in voxels (default 128)")
    parser.add_argument("--windows", type=int, default=6, help="windows per validation (default 6)")
    parser.add_argument("--repeats", type=int, default=3, help="validations per backend (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch and OpenVINO threads (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 48^3 windows, base width 8, 2 validations")
    args = parser.parse_args(argv)
    if not openvino_available():
        print("openvino is not installed: nothing to compare (pip install openvino)")
        return 0
    if args.quick:
        args.window, args.repeats = 48, 2
    torch.set_num_threads(args.threads)
    model, plan = _model_and_plan(args.run, args.window, args.quick)
    model.train()
    case = _case(plan, args.window, args.seed)
    starts = window_starts_of(tuple(case.image.shape[1:]), plan)[:args.windows]
    rows = {}
    for mode in MODES:
        rows[mode] = _validate(mode, model, plan, case, starts, args.repeats, args.seed)
    print(f"\n{len(starts)} windows of {args.window}^3 per validation, {args.threads} threads, {_cpu()}")
    print(f"{'backend':<10} {'first (s)':>10} {'later, median (s)':>18}  ran on          Dice diff vs torch")
    for mode, r in rows.items():
        print(f"{mode:<10} {r['first_s']:>10.1f} {r['median_s']:>18.1f}  {r['ran_on']:<15} {r['dice_difference']:.4f}")
    figures = {"window": args.window, "windows": len(starts), "repeats": args.repeats, "threads": args.threads,
               "run": bool(args.run), "quick": args.quick, "cpu": _cpu(), "backends": rows,
               "speedup_openvino_vs_torch": round(rows["torch"]["median_s"] / rows["openvino"]["median_s"], 2),
               "auto_choice": rows["auto"]["ran_on"],
               "dice_max_difference": max(r["dice_difference"] for r in rows.values())}
    if not args.quick:
        save_result("validation_backend", figures, sys.argv)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
