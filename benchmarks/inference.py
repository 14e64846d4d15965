"""Inference benchmark (issue: CPU inference at the hardware's limit): one BraTS-size case (4x240x240x155), the
default 3-D model, 2 CPU threads; voxseg's predict path with each backend next to MONAI's
sliding_window_inference and a plain OpenVINO sliding window, with the same weights, window (128^3) and overlap
(0.5), measured in the same run.

Each method runs in its own process so its peak RSS is its own. Its timed region covers the same work for all:
preprocessing (voxseg's run: crop to the nonzero box, then N4 / z-score / resampling as the run says), the sliding
window, restore to the input geometry and labels. Building a network, copying weights, converting and compiling
for OpenVINO happen before the timer starts, for every method.

Methods. voxseg (crop first, Gaussian blending, batched windows): "voxseg_torch_fp32" (PyTorch, float32: the
reference every label map is compared with), "voxseg" (PyTorch at the precision `amp auto` measures: voxseg before
the backends), "voxseg_ov_fp32" / "voxseg_ov_bf16" (`--backend openvino --precision fp32|bf16`). Peers, given what
a careful user would give them, on the same preprocessed intensities zero-padded back to the whole volume's extent
(zero is the normalised background outside the head), through `sliding_window_inference(mode="gaussian")`: "monai"
(MONAI's DynUNet holding the same weights, float32), "monai_bf16" (under bf16 autocast), "monai_crop" (float32 on
voxseg's cropped volume: the same windows as voxseg), "openvino_peer" (the same network compiled by OpenVINO for the
CPU with its default precision, called by MONAI's inferer on the whole volume: what a CPU user would write). Controls:
"monai_shifted" (MONAI with its window grid moved by `--shift` voxels: how much labels depend on where windows fall),
"voxseg_whole" / "voxseg_whole_fp32" (voxseg's sliding window on MONAI's whole-extent volume). Per method: seconds,
peak RSS and foreground label Dice against voxseg_torch_fp32 (with the case's manual label, each method's Dice
against it too).

A second table: the network alone on one window, per runtime and precision (seconds per window, best of two after
an untimed call), its TFLOP/s (FLOPs counted by `voxseg.nets.info.estimate_flops`) against the CPU's peak measured
in the same run by a 4096^2 matmul in torch at that precision, so the distance to the hardware's limit is visible.

With `--run RUN` the weights and preprocessing of a trained run are used (e.g. from benchmarks/brats.py, whose 2 mm
run is best compared with `--window 64`, its training patch); otherwise the default network with seeded random
weights (near-uniform probabilities that flip with any difference in window content, so label agreement is only
meaningful with trained weights). MONAI runs its own network: a `DynUNet` (nnU-Net's plain U-Net, which our "unet"
preset equals, see the oracle test in tests/test_nets.py) holding the same weights, copied and checked on a small
input; `--monai-net same` gives it voxseg's module instead.

`--quick`: a 48x48x40 crop of the case, window 32, three methods, a 2048^2 matmul, nothing saved: a check that
the script runs, not a figure to quote.

Usage:
    python benchmarks/inference.py [--case PATH_TO_BRATS_CASE_FOLDER] [--run RUN] [--window 128] [--threads 2]
        [--quick]

The last line is a JSON object with speedup_vs_monai, speedup_vs_voxseg_torch, speedup_vs_openvino_peer (of
the faster voxseg OpenVINO method), label_dice_vs_fp32, peak_rss_gib, tflops (per runtime and precision), the
CPU model and its AVX-512 / AMX flags.
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
METHODS = ("voxseg_torch_fp32", "voxseg", "voxseg_ov_fp32", "voxseg_ov_bf16", "openvino_peer", "monai", "monai_bf16",
           "monai_crop", "monai_shifted", "voxseg_whole", "voxseg_whole_fp32")
QUICK_METHODS = ("voxseg_torch_fp32", "voxseg_ov_fp32", "openvino_peer")
REFERENCE = "voxseg_torch_fp32"
"""Every method's labels are compared with this one's (voxseg, PyTorch, float32, on the cropped volume)."""


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


def _voxseg_backend(method: str, model, plan):
    """The backend of a voxseg method, its network converted and compiled now (outside the timed region)."""
    from voxseg.infer import InferenceBackend

    name, precision = {"voxseg": ("torch", "auto"), "voxseg_torch_fp32": ("torch", "fp32"),
                       "voxseg_ov_fp32": ("openvino", "fp32"), "voxseg_ov_bf16": ("openvino", "bf16"),
                       "voxseg_whole": ("torch", "auto"), "voxseg_whole_fp32": ("torch", "fp32")}[method]
    backend = InferenceBackend(name, precision)
    backend.predictor(model, plan.train.amp, (plan.inference.batch_size, plan.input_channels,
                                              *plan.train.patch_size), torch.device("cpu"))
    return backend


def _monai_predictor(method: str, model, window: tuple[int, ...], monai_net: str, sigmoid: bool):
    """The window function MONAI's inferer calls (probabilities), built now (outside the timed region):
    MONAI's DynUNet (or voxseg's module) in float32 or under bf16 autocast, or, for "openvino_peer", the same
    network compiled by OpenVINO with its default precision for the CPU (what a user writing it by hand gets)."""
    import contextlib

    if method == "openvino_peer":
        from voxseg.infer._openvino import convert_network
        from voxseg.infer.backends import require_openvino

        openvino = require_openvino()  # without its telemetry, as voxseg imports it

        compiled = openvino.Core().compile_model(convert_network(model, (1, model.in_channels, *window)), "CPU",
                                                 {"INFERENCE_NUM_THREADS": torch.get_num_threads()})
        net = lambda batch: torch.from_numpy(compiled(batch.numpy())[0])  # noqa: E731
    else:
        net = _dynunet_with_weights(model) if monai_net == "dynunet" else model
    context = torch.autocast("cpu", dtype=torch.bfloat16) if method == "monai_bf16" else contextlib.nullcontext()

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        with context:
            logits = net(batch).float()
        return torch.sigmoid(logits) if sigmoid else torch.softmax(logits, 1)
    return predictor


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
    if method.startswith("voxseg"):
        backend = _voxseg_backend(method, model, plan)
    else:
        predictor = _monai_predictor(method, model, window, monai_net, sigmoid)
    start = time.perf_counter()
    pre = preprocess_case(image, geometry.spacing, plan.preprocess, affine=geometry.affine)
    if method.startswith("voxseg") and not method.startswith("voxseg_whole"):
        with torch.inference_mode():
            probs = predict_volume(model, plan, pre.image, torch.device("cpu"), backend=backend)
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
            with torch.inference_mode():
                probs = predict_volume(model, plan, volume, torch.device("cpu"), backend=backend)
        else:
            from monai.inferers import sliding_window_inference

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


def _window_worker(run: str | None, threads: int, out: Path, window: tuple[int, ...], n: int = 4096) -> None:
    """Seconds per window (best of 2 after one untimed call) of the network alone, per runtime and precision,
    its FLOPs, and the CPU's measured peak for each precision (an ``n`` x ``n`` matmul in torch, best of 3)."""
    from voxseg.infer import InferenceBackend
    from voxseg.infer.backends import require_openvino
    from voxseg.nets.info import estimate_flops

    openvino = require_openvino()
    torch.set_num_threads(threads)
    model, plan = _model_and_plan(run, 4, window)
    shape = (1, plan.input_channels, *window)
    sample = torch.randn(shape)
    flops = estimate_flops(model, shape[1:])
    runners = {f"{name} {precision}": InferenceBackend(name, precision).predictor(model, "auto", shape,
                                                                                 torch.device("cpu"))
               for name in ("torch", "openvino") for precision in ("fp32", "bf16")}
    seconds = {}
    with torch.inference_mode():
        for label, run_window in runners.items():
            run_window(sample)
            seconds[label] = min(_timed(run_window, sample) for _ in range(2))
    peaks = {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        peaks[precision] = 2 * n ** 3 / min(_timed(lambda _: a @ b, None) for _ in range(3)) / 1e12
    (out / "window.json").write_text(json.dumps({"seconds": seconds, "flops": flops, "peak_tflops": peaks,
                                                 "openvino": openvino.__version__}))


def _timed(fn, arg) -> float:
    begin = time.perf_counter()
    fn(arg)
    return time.perf_counter() - begin


def _reference_foreground(case_dir: Path) -> np.ndarray | None:
    """The case's manual label as a foreground mask (BraTS ``*_seg.nii.gz``), if the folder has one."""
    from voxseg.io import read_volume

    found = sorted(case_dir.glob("*seg.nii*"))
    return read_volume(found[0])[0] > 0 if found else None


def _dice_foreground(a: np.ndarray, b: np.ndarray) -> float:
    fa, fb = a > 0, b > 0
    total = fa.sum() + fb.sum()
    return 1.0 if total == 0 else float(2 * (fa & fb).sum() / total)


def _quick_case(case_dir: Path, folder: Path, size: tuple[int, int, int] = (48, 48, 40)) -> Path:
    """A central ``size`` crop of the case's four channels, written as a BraTS case folder (for ``--quick``)."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(case_dir.glob("*.nii*")):
        if "seg" in path.name:
            continue
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
        lo = [(n - s) // 2 for n, s in zip(data.shape, size)]
        box = tuple(slice(a, a + s) for a, s in zip(lo, size))
        affine = img.affine.copy()
        affine[:3, 3] = img.affine[:3, :3] @ np.array(lo) + img.affine[:3, 3]
        nib.save(nib.Nifti1Image(np.ascontiguousarray(data[box]), affine, img.header), folder / path.name)
    return folder


def _cpu() -> dict:
    """The CPU's model name and its SIMD flags relevant to bf16 (from /proc/cpuinfo where there is one)."""
    import platform

    info = {"cpu": platform.processor() or platform.machine(), "flags": []}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        text = cpuinfo.read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                info["flags"] = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma")))
                break
    return info


def _run_workers(args, methods, case: Path, shift: int, out: Path) -> dict:
    results = {}
    for method in methods:
        cmd = [sys.executable, __file__, "--worker", method, "--case", str(case), "--threads",
               str(args.threads), "--out", str(out), "--window", str(args.window), "--shift", str(shift),
               "--monai-net", args.monai_net] + (["--run", args.run] if args.run else [])
        subprocess.run(cmd, check=True)
        results[method] = json.loads((out / f"{method}.json").read_text())
        print(f"{method}: {results[method]['seconds']:.1f} s, peak RSS {results[method]['peak_rss_gib']:.2f} GiB",
              flush=True)
    cmd = [sys.executable, __file__, "--worker", "window", "--threads", str(args.threads), "--out", str(out),
           "--window", str(args.window)] + (["--run", args.run] if args.run else []) + (["--quick"] if args.quick else [])
    subprocess.run(cmd, check=True)
    results["window"] = json.loads((out / "window.json").read_text())
    return results


def _print_tables(args, results, dice, window, cpu) -> None:
    print(f"\n{cpu['cpu']} ({', '.join(cpu['flags']) or 'no AVX flags read'}), window {args.window}^3, overlap "
          f"{OVERLAP}, {args.threads} threads, weights: {args.run or 'default unet, seeded random'}")
    print(f"{'method':<20}{'seconds':>10}{'peak RSS GiB':>14}{'label Dice vs ' + REFERENCE:>32}")
    for method, r in results.items():
        if method != "window":
            print(f"{method:<20}{r['seconds']:>10.1f}{r['peak_rss_gib']:>14.2f}{dice[method]:>32.4f}")
    print(f"\n{'network alone':<20}{'s / window':>12}{'TFLOP/s':>10}{'peak TFLOP/s':>14}{'of peak':>9}  "
          f"({window['flops'] / 1e12:.3f} TFLOP per window; peak: a large matmul in torch at that precision)")
    for label, sec in window["seconds"].items():
        precision = label.split()[1]
        tflops = window["flops"] / sec / 1e12
        peak = window["peak_tflops"][precision]
        print(f"{label:<20}{sec:>12.3f}{tflops:>10.3f}{peak:>14.3f}{tflops / peak:>9.0%}")


@user_errors
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", type=Path, default=SHARED_DATA / "brats2018" / "Brats18_2013_11_1")
    parser.add_argument("--run", default=None, help="a trained run folder (4 BraTS channels)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--window", type=int, default=None, help="cubic window edge in voxels (default 128; "
                                                                  "32 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a 48x48x40 crop of the case, window 32, methods {', '.join(QUICK_METHODS)} "
                             "(a check that the script runs, not a figure to quote; nothing saved)")
    parser.add_argument("--monai-net", choices=["dynunet", "same"], default="dynunet",
                        help="MONAI's DynUNet with the copied weights, or voxseg's own module")
    parser.add_argument("--shift", type=int, default=None,
                        help="control run: MONAI with its window grid moved by this many voxels (default: window/8)")
    parser.add_argument("--worker", choices=(*METHODS, "window"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.window = args.window or (32 if args.quick else 128)
    window = (args.window,) * 3
    if args.worker == "window":
        _window_worker(args.run, args.threads, args.out, window, 2048 if args.quick else 4096)
        return 0
    if args.worker:
        _worker(args.worker, args.case, args.run, args.threads, args.out, window, args.monai_net, args.shift or 0)
        return 0
    if not args.case.exists():
        print(f"error: {args.case}: BraTS case not found (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    from voxseg.io import find_prediction_cases, read_case

    # Unreadable or inconsistent files fail here, in one line, not inside a worker.
    read_case(find_prediction_cases(args.case, ["flair", "t1", "t1ce", "t2"])[0], with_label=False)
    shift = args.window // 8 if args.shift is None else args.shift
    methods = QUICK_METHODS if args.quick else METHODS
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        case = _quick_case(args.case, out / "case" / args.case.name) if args.quick else args.case
        results = _run_workers(args, methods, case, shift, out)
        labels = {m: np.load(out / f"{m}.npy") for m in methods}
        truth = None if args.quick else _reference_foreground(args.case)
    dice = {m: _dice_foreground(labels[REFERENCE], x) for m, x in labels.items()}
    per_label = {m: {int(v): round(_dice_foreground(labels[REFERENCE] == v, x == v), 4)
                     for v in np.union1d(np.unique(labels[REFERENCE]), np.unique(x)) if v} for m, x in labels.items()}
    cpu = _cpu()
    window_figures = results.pop("window")
    _print_tables(args, results, dice, window_figures, cpu)
    seconds = {m: r["seconds"] for m, r in results.items()}
    best_ov = min((m for m in seconds if m.startswith("voxseg_ov")), key=seconds.get)
    vs_truth = {m: round(_dice_foreground(x, truth), 4) for m, x in labels.items()} if truth is not None else {}
    monai, today = seconds.get("monai"), seconds.get("voxseg", seconds[REFERENCE])
    figures = {"speedup_vs_monai": round(monai / seconds[best_ov], 3) if monai else None,
               "speedup_vs_voxseg_torch": round(today / seconds[best_ov], 3),
               "speedup_vs_openvino_peer": round(seconds["openvino_peer"] / seconds[best_ov], 3),
               "label_dice_vs_fp32": round(dice[best_ov], 4), "peak_rss_gib": round(results[best_ov]["peak_rss_gib"], 3),
               "tflops": {k: round(window_figures["flops"] / v / 1e12, 4) for k, v in window_figures["seconds"].items()},
               "peak_tflops": {k: round(v, 4) for k, v in window_figures["peak_tflops"].items()},
               "seconds_per_window": {k: round(v, 4) for k, v in window_figures["seconds"].items()},
               "voxseg_openvino_method": best_ov, "cpu": cpu["cpu"], "cpu_flags": cpu["flags"],
               "openvino": window_figures["openvino"], "window": args.window, "threads": args.threads,
               "weights": args.run or "random", "monai_net": args.monai_net, "quick": args.quick,
               "seconds": {m: round(v, 2) for m, v in seconds.items()},
               "peak_rss": {m: round(r["peak_rss_gib"], 3) for m, r in results.items()},
               "label_dice": {m: round(v, 4) for m, v in dice.items()}, "label_dice_per_label": per_label,
               **({"dice_vs_reference": vs_truth} if vs_truth else {})}
    if not args.quick:
        figures["shift_voxels"] = shift
        save_result("inference_trained" if args.run else "inference", figures, sys.argv)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
