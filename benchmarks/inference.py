"""Inference benchmark (issue: inference at full strength): one BraTS-size case (4x240x240x155), the
default 3-D model, 2 CPU threads; voxseg's predict path next to MONAI's sliding_window_inference with
the same weights, window (128^3) and overlap (0.5), measured in the same run.

Each method runs in its own process so its peak RSS is its own. voxseg: its run's preprocessing (crop to the
nonzero box, then N4 / z-score / resampling as the run says), Gaussian-blended sliding window (mixed precision
chosen by timing both on the machine in use), restore to the input geometry. MONAI: the same preprocessed intensities zero-padded back
to the whole volume's extent (zero is the normalised background outside the head), `sliding_window_inference(
mode="gaussian")` on that whole volume; its whole label map counts, outside the crop too. Both blend
probabilities (the network's softmax or sigmoid per window). With `--run RUN` the weights and preprocessing of a
trained run are used (e.g. from benchmarks/brats.py, whose 2 mm run is best compared with `--window 64`, its
training patch); otherwise the default network with seeded random weights (near-uniform probabilities that flip
with any difference in window content).

MONAI runs its own network: a `DynUNet` (nnU-Net's plain U-Net, which our "unet" preset equals, see
the oracle test in tests/test_nets.py) holding the same weights, copied and checked on a small input.
Two untimed controls. "Same input": MONAI's inferer on voxseg's cropped volume. "Window placement": MONAI on the
whole volume again with its window grid moved by `--shift` voxels (default window/8); MONAI's agreement with
itself shows how much the weights' labels depend on where the windows fall, which any crop changes, so it bounds
what a crop-first method can reach. Two timed controls, "voxseg_whole" and "voxseg_whole_fp32": voxseg's sliding
window (the precision it chooses, or float32) on MONAI's whole-extent volume, i.e. without the crop's speed-up.
They show whether the "same input" gap comes from precision or from the window grid: voxseg spreads its windows
evenly (nnU-Net's grid) and floors a truncated Gaussian, MONAI steps by the interval, clamps the last window and
uses an analytic Gaussian, so with random weights the two disagree on labels even at equal precision.
Both methods preprocess the same way (voxseg's run), so the comparison measures inference, not preprocessing
(N4 fitted on the whole volume instead of the crop would fit its field on another domain).
When the case folder has a manual label, each method's foreground Dice against it is printed.
voxseg runs its own `UNet`, whose inference pass is the memory-lean path of `voxseg.nets` (slabbed
convolutions, no skip concatenation, in-place norms). `--monai-net same` gives MONAI voxseg's module
instead (then both share the lean network pass and only the sliding window differs).

Usage:
    python benchmarks/inference.py [--case PATH_TO_BRATS_CASE_FOLDER] [--run RUN] [--window 128] [--threads 2]

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
from _results import save_result

from voxseg.cli import user_errors

OVERLAP = 0.5
METHODS = ("monai", "voxseg", "monai_crop", "monai_shifted", "voxseg_whole", "voxseg_whole_fp32")


def _model_and_plan(run: str | None, n_channels: int, window: tuple[int, ...]):
    from voxseg.infer import build_model, load_model
    from voxseg.config import NetworkConfig, RunPlan, TrainConfig

    if run:
        model, plan = load_model(run)
    else:
        plan = RunPlan(channel_names=[f"c{i}" for i in range(n_channels)], label_values=[0, 1, 2, 4],
                       network=NetworkConfig("unet", 3, {}), train=TrainConfig(patch_size=list(window)))
        torch.manual_seed(0)
        model = build_model(plan).eval()
    plan.train.patch_size = list(window)
    plan.inference.overlap = OVERLAP
    plan.inference.batch_size = 1
    return model, plan


def _dynunet_with_weights(model: torch.nn.Module) -> torch.nn.Module:
    """MONAI's DynUNet with the weights of voxseg's plain "unet" (strided convs, transposed convs,
    instance norm, or batch norm with its running statistics, LeakyReLU 0.01), checked to give the same
    logits on a small input."""
    from monai.networks.nets import DynUNet

    from voxseg.nets import PlainBlock, UNet

    if not isinstance(model, UNet) or model.bottleneck is not None or len(model.gates) or not all(
            isinstance(stage[0], PlainBlock) and len(stage) == 1 for stage in model.encoder_stages):
        raise SystemExit("error: --monai-net dynunet needs a plain 'unet' run; use --monai-net same")
    depth = len(model.widths)
    batch_norm = isinstance(model.encoder_stages[0][0].convs[0][1], torch.nn.BatchNorm3d)
    norm = ("BATCH", {}) if batch_norm else ("INSTANCE", {"affine": True})
    ref = DynUNet(spatial_dims=3, in_channels=model.in_channels, out_channels=model.out_channels,
                  kernel_size=[3] * depth, strides=[1] + [2] * (depth - 1), upsample_kernel_size=[2] * (depth - 1),
                  filters=list(model.widths), norm_name=norm,
                  act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01})).eval()

    def copy_block(ours, theirs):
        (c1, n1, *_), (c2, n2, *_) = ours.convs
        for a, b in [(c1.weight, theirs.conv1.conv.weight), (n1.weight, theirs.norm1.weight), (n1.bias, theirs.norm1.bias),
                     (c2.weight, theirs.conv2.conv.weight), (n2.weight, theirs.norm2.weight), (n2.bias, theirs.norm2.bias)]:
            b.copy_(a)
        if batch_norm:  # eval mode normalises with the running statistics
            for a, b in [(n1, theirs.norm1), (n2, theirs.norm2)]:
                b.running_mean.copy_(a.running_mean)
                b.running_var.copy_(a.running_var)

    with torch.no_grad():
        for stage, theirs in zip(model.encoder_stages, [ref.input_block, *ref.downsamples, ref.bottleneck]):
            copy_block(stage[0], theirs)
        for up, block, theirs in zip(model.ups, model.decoder_blocks, ref.upsamples):
            theirs.transp_conv.conv.weight.copy_(up.weight)
            copy_block(block, theirs.conv_block)
        ref.output_block.conv.conv.weight.copy_(model.heads[0].weight)
        ref.output_block.conv.conv.bias.copy_(model.heads[0].bias)
        x = torch.randn(1, model.in_channels, *([2 ** (depth - 1) * 2] * 3))
        gap = float((ref(x) - model(x)).abs().max())
    if gap > 1e-3:
        raise SystemExit(f"error: DynUNet with copied weights differs from voxseg's unet by {gap}")
    return ref


def _worker(method: str, case_dir: Path, run: str | None, threads: int, out: Path, window: tuple[int, ...],
            monai_net: str, shift: int = 0) -> None:
    from voxseg.data.preprocess import (
        preprocess_case,
        resample_probabilities,
        restore_to_original,
    )
    from voxseg.infer import predict_volume, probabilities_to_labels
    from voxseg.io import find_prediction_cases, read_case

    torch.set_num_threads(threads)
    case = find_prediction_cases(case_dir, ["flair", "t1", "t1ce", "t2"])[0]
    image, _, geometry = read_case(case, with_label=False)
    model, plan = _model_and_plan(run, image.shape[0], window)
    sigmoid = plan.activation == "sigmoid"
    start = time.perf_counter()
    pre = preprocess_case(image, geometry.spacing, plan.preprocess, affine=geometry.affine)
    if method == "voxseg":
        with torch.inference_mode():
            probs = predict_volume(model, plan, pre.image, torch.device("cpu"))
        # Outside the crop: background (softmax channel 0 = 1; sigmoid regions all 0).
        probs = restore_to_original(probs, pre.record, is_label=False, background_channel=None if sigmoid else 0)
        labels = probabilities_to_labels(probs, plan)
    else:
        # The other methods get the same preprocessed intensities (N4 fitted, normalised and resampled on the
        # crop, as voxseg's run defines them), zero-padded back to the whole volume's extent (zero is the
        # normalised background outside the head): only the inference differs. "monai_crop": no padding (the
        # same windows as voxseg). "monai_shifted": `shift` more voxels of padding before each axis, so only
        # MONAI's window grid moves against the anatomy. "voxseg_whole" / "voxseg_whole_fp32": voxseg's
        # sliding window (its precision chosen by measurement, or float32) on MONAI's whole-extent volume,
        # i.e. on MONAI's window grid.
        record = pre.record
        if method == "monai_crop" or not plan.preprocess.crop_to_nonzero:
            pads = [(0, 0)] * 3
        else:
            pads = [(round(a * r / c), round((o - b) * r / c)) for (a, b), o, c, r in
                    zip(record.crop_bbox, record.original_shape, record.cropped_shape, record.resampled_shape)]
        lead = shift if method == "monai_shifted" else 0
        padded = [(0, 0)] + [(before + lead, after) for before, after in pads]
        volume = np.pad(pre.image, padded) if any(a or b for a, b in padded) else pre.image
        if method.startswith("voxseg_whole"):
            if method == "voxseg_whole_fp32":
                plan.train.amp = "none"
            with torch.inference_mode():
                probs = predict_volume(model, plan, volume, torch.device("cpu"))
        else:
            from monai.inferers import sliding_window_inference

            if monai_net == "dynunet":
                model = _dynunet_with_weights(model)

            def predictor(batch: torch.Tensor) -> torch.Tensor:
                logits = model(batch)
                return torch.sigmoid(logits) if sigmoid else torch.softmax(logits, 1)

            with torch.inference_mode():
                probs = sliding_window_inference(torch.from_numpy(volume)[None], window, 1, predictor,
                                                 overlap=OVERLAP, mode="gaussian", sigma_scale=0.125)[0].numpy()
        # The whole map counts, outside the crop too (voxseg's crop-first path calls that background by
        # construction): the padded volume back on the original grid, and inside the crop exactly voxseg's
        # restore step.
        probs = probs[(slice(None),) + (slice(lead, None),) * 3]
        if any(a or b for a, b in pads):
            inside = (slice(None),) + tuple(slice(a, a + n) for (a, _), n in zip(pads, record.resampled_shape))
            box = (slice(None),) + tuple(slice(a, b) for a, b in record.crop_bbox)
            whole = resample_probabilities(probs, record.original_shape)
            whole[box] = resample_probabilities(probs[inside], record.cropped_shape)  # restore_to_original's step
            if record.reoriented is not None:  # and its last step: back to the file's own voxel order
                from voxseg.data import reorient

                whole = np.ascontiguousarray(reorient(whole, record.reoriented[1], record.reoriented[0],
                                                      channel_first=True))
            probs = whole
        else:
            probs = restore_to_original(np.ascontiguousarray(probs), record, is_label=False,
                                        background_channel=None if sigmoid else 0)
        labels = probabilities_to_labels(probs, plan)
    seconds = time.perf_counter() - start
    np.save(out / f"{method}.npy", labels)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB -> GiB
    (out / f"{method}.json").write_text(json.dumps({"seconds": seconds, "peak_rss_gib": peak}))


def _reference_foreground(case_dir: Path) -> np.ndarray | None:
    """The case's manual label as a foreground mask (BraTS ``*_seg.nii.gz``), if the folder has one."""
    from voxseg.io import read_volume

    found = sorted(case_dir.glob("*seg.nii*"))
    return read_volume(found[0])[0] > 0 if found else None


def _dice_foreground(a: np.ndarray, b: np.ndarray) -> float:
    fa, fb = a > 0, b > 0
    total = fa.sum() + fb.sum()
    return 1.0 if total == 0 else float(2 * (fa & fb).sum() / total)


@user_errors
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", type=Path, default=SHARED_DATA / "brats2018" / "Brats18_2013_11_1")
    parser.add_argument("--run", default=None, help="a trained run folder (4 BraTS channels)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--window", type=int, default=128, help="cubic window edge in voxels (issue: 128)")
    parser.add_argument("--monai-net", choices=["dynunet", "same"], default="dynunet",
                        help="MONAI's DynUNet with the copied weights, or voxseg's own module")
    parser.add_argument("--shift", type=int, default=None,
                        help="control run: MONAI with its window grid moved by this many voxels (default: window/8)")
    parser.add_argument("--worker", choices=METHODS, default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.case, args.run, args.threads, args.out, (args.window,) * 3, args.monai_net,
                args.shift or 0)
        return 0
    if not args.case.exists():
        print(f"error: {args.case}: BraTS case not found (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    from voxseg.io import find_prediction_cases, read_case

    # Unreadable or inconsistent files fail here, in one line, not inside a worker.
    read_case(find_prediction_cases(args.case, ["flair", "t1", "t1ce", "t2"])[0], with_label=False)
    shift = args.window // 8 if args.shift is None else args.shift
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for method in METHODS:
            cmd = [sys.executable, __file__, "--worker", method, "--case", str(args.case), "--threads",
                   str(args.threads), "--out", str(out), "--window", str(args.window), "--shift", str(shift),
                   "--monai-net", args.monai_net] + (["--run", args.run] if args.run else [])
            subprocess.run(cmd, check=True)
            results[method] = json.loads((out / f"{method}.json").read_text())
            print(f"{method}: {results[method]['seconds']:.1f} s, peak RSS {results[method]['peak_rss_gib']:.2f} GiB",
                  flush=True)
        a, b, c, d, e, f = (np.load(out / f"{m}.npy") for m in METHODS)
        whole_dice = {"voxseg_whole": _dice_foreground(a, e), "voxseg_whole_fp32": _dice_foreground(a, f)}
        label_dice = _dice_foreground(a, b)
        shifted_dice = _dice_foreground(a, d)
        per_label = {int(v): _dice_foreground(a == v, b == v) for v in np.union1d(np.unique(a), np.unique(b)) if v}
        same_input_dice = _dice_foreground(c, b)
        truth = _reference_foreground(args.case)
        vs_truth = {m: _dice_foreground(x, truth) for m, x in (("monai", a), ("voxseg", b))} if truth is not None else {}
    speedup = results["monai"]["seconds"] / results["voxseg"]["seconds"]
    print(f"\ncase {args.case.name}, window {args.window}^3, overlap {OVERLAP}, {args.threads} threads, "
          f"weights: {args.run or 'default unet, seeded random'}")
    print(f"{'method':<20}{'seconds':>10}{'peak RSS GiB':>14}{'label Dice vs MONAI':>21}")
    for method in ("monai", "voxseg"):
        print(f"{method:<20}{results[method]['seconds']:>10.1f}{results[method]['peak_rss_gib']:>14.2f}"
              + (f"{label_dice:>21.4f}" if method == "voxseg" else ""))
    for method, dice in whole_dice.items():  # controls: voxseg on MONAI's window grid (no crop-first speed-up)
        print(f"{method:<20}{results[method]['seconds']:>10.1f}{results[method]['peak_rss_gib']:>14.2f}{dice:>21.4f}")
    print(f"speedup {speedup:.2f}x; foreground label Dice between the two maps {label_dice:.4f}; per label "
          + ", ".join(f"{k}: {v:.4f}" for k, v in per_label.items()))
    print(f"same input (MONAI's inferer on voxseg's cropped volume, not timed): foreground Dice {same_input_dice:.4f}")
    print(f"window-placement control (MONAI against itself with its grid moved by {shift} voxels, not timed): "
          f"foreground Dice {shifted_dice:.4f}")
    if vs_truth:
        print("foreground Dice against the case's manual label: "
              + ", ".join(f"{m} {v:.4f}" for m, v in vs_truth.items()))
    figures = {"speedup_vs_monai": round(speedup, 3), "label_dice": round(label_dice, 4),
               "peak_rss_gib": round(results["voxseg"]["peak_rss_gib"], 3),
               "voxseg_seconds": round(results["voxseg"]["seconds"], 1),
               "monai_seconds": round(results["monai"]["seconds"], 1),
               "monai_peak_rss_gib": round(results["monai"]["peak_rss_gib"], 3), "window": args.window,
               "weights": args.run or "random", "monai_net": args.monai_net,
               "label_dice_same_input": round(same_input_dice, 4),
               "label_dice_monai_shifted": round(shifted_dice, 4), "shift_voxels": shift,
               **{f"{m}_seconds": round(results[m]["seconds"], 1) for m in whole_dice},
               **{f"label_dice_{m}": round(v, 4) for m, v in whole_dice.items()},
               **{f"dice_vs_reference_{m}": round(v, 4) for m, v in vs_truth.items()}}
    print(json.dumps(figures))
    save_result("inference_trained" if args.run else "inference", figures, sys.argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
