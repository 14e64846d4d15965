"""Prediction with an nnU-Net v2 model folder, matched to ``nnUNetv2_predict`` (``nnUNetPredictor``):

preprocess (:mod:`voxseg.infer.nnunet.preprocess`) -> pad to at least the patch (centred, zeros) -> windows
with step 0.5 of the patch (nnU-Net's ``compute_steps_for_sliding_window``, here
:func:`voxseg.infer.windows.window_starts` with overlap 0.5) -> per window the logits of every fold, each the
mean over mirrorings on the checkpoint's allowed axes (all their combinations) -> blended with nnU-Net's
Gaussian (sigma 1/8 of the patch; its constant scale cancels) -> mean over folds -> resampled to the cropped
input grid and labelled (:func:`voxseg.infer.nnunet.resample.logits_to_labels`) -> put back in the uncropped
volume, transposed back, written with the first channel's SimpleITK geometry.

The 2d configuration predicts each slice of the first (transposed) axis with 2D windows. Blending is in
float32 (nnU-Net accumulates in float16), so labels can differ where two classes tie within float16 rounding.
The network runs in float32 as nnU-Net's does on a CPU (``amp="none"``), or in bf16 (``"bf16"``; ``"auto"``:
bf16 on a CPU where it measures faster, :func:`voxseg.nets.resolve_amp`), about twice as fast on a CPU with bf16
instructions at the cost of labels differing where classes nearly tie.

What runs the network is an :class:`~voxseg.infer.backends.InferenceBackend`, as for voxseg's own runs:
PyTorch, or OpenVINO (``--backend openvino``, or ``auto`` where it measures at least 1.2 times as fast). Each
fold's network is converted once, for one window of the patch size (batch 1); a window's mirrored copies are
calls on that same compiled network. The converted networks are cached in the model folder
(``.cache/openvino/``) when it is writable, else (a read-only folder, a model package) kept in memory.
"""
from __future__ import annotations

import itertools
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import SimpleITK as sitk
import torch

from voxseg.errors import InputError
from voxseg.infer.backends import InferenceBackend, WindowFn
from voxseg.infer.nnunet.model_folder import NnunetModel
from voxseg.infer.nnunet.network import build_nnunet_network
from voxseg.infer.nnunet.package import load_nnunet_source
from voxseg.infer.package import is_package
from voxseg.infer.nnunet.preprocess import NnunetCase, preprocess_case
from voxseg.infer.nnunet.resample import logits_to_labels
from voxseg.infer.windows import gaussian_importance_map, window_starts

__all__ = ["NnunetLabels", "find_nnunet_cases", "load_nnunet_networks", "nnunet_label_info", "predict_nnunet_case",
           "predict_nnunet_path", "sliding_window_logits"]

TILE_STEP = 0.5


@dataclass
class NnunetLabels:
    """Output channels and how they become labels: ``regions`` is ``regions_class_order`` for a region-based
    label set (sigmoid per region, painted in that order), ``None`` for softmax classes (argmax)."""

    num_outputs: int
    regions: list[int] | None
    max_label: int


def nnunet_label_info(dataset: dict, source: Path) -> NnunetLabels:
    """Read ``labels`` / ``regions_class_order`` of ``dataset.json`` as nnU-Net's ``LabelManager`` does."""
    labels = {k: v for k, v in dataset.get("labels", {}).items() if k != "ignore"}
    if labels.get("background") != 0:
        raise InputError(source, "dataset.json labels must declare background as 0")
    has_regions = any(isinstance(v, (list, tuple)) and len(v) > 1 for v in labels.values())
    values = [int(x) for v in labels.values() for x in (v if isinstance(v, (list, tuple)) else [v])]
    if not has_regions:
        return NnunetLabels(len(set(values)), None, max(values))
    regions = [v for v in labels.values()
               if not (np.isscalar(v) and v == 0) and not (isinstance(v, (list, tuple)) and set(v) == {0})]
    order = dataset.get("regions_class_order")
    if not isinstance(order, list) or len(order) != len(regions):
        raise InputError(source, f"region-based labels need 'regions_class_order' with {len(regions)} entries")
    return NnunetLabels(len(regions), [int(o) for o in order], max(int(o) for o in order))


def _mirror_sets(axes: Sequence[int] | None, spatial: int) -> list[tuple[int, ...]]:
    """Flip-dim tuples of a batch ``(B, C, *spatial)``: none, then every combination of the allowed axes."""
    dims = [a + 2 for a in (axes or ()) if a < spatial]
    return [()] + [c for i in range(len(dims)) for c in itertools.combinations(dims, i + 1)]


def _window_logits(runners: Sequence[WindowFn], x: torch.Tensor, mirrors: list[tuple[int, ...]]) -> torch.Tensor:
    """Mean over nets of (mean over mirrorings of the logits) for one window ``(1, C, *patch)``; the mirrored
    copies go to each net's window function as one batch (instance norm is per sample, so this is exact;
    OpenVINO runs them one after another on its one-window network)."""
    batch = torch.cat([x if not m else torch.flip(x, m) for m in mirrors])
    total = None
    for run in runners:
        out = run(batch).float()
        mean = sum(o[None] if not m else torch.flip(o[None], m) for o, m in zip(out, mirrors)) / len(mirrors)
        total = mean if total is None else total + mean
    return (total / len(runners))[0]


def sliding_window_logits(nets: Sequence[torch.nn.Module], data: np.ndarray, patch: Sequence[int], num_outputs: int,
                          mirror_axes: Sequence[int] | None = None,
                          progress: Callable[[int], None] | None = None, amp: str = "none",
                          backend: InferenceBackend | None = None, cache_dir: Path | None = None) -> torch.Tensor:
    """Blended logits ``(K, *spatial)`` float32 of ``data`` ``(C, *spatial)`` (3D; a 2D ``patch`` predicts each
    slice of the first axis), as nnU-Net's ``predict_sliding_window_return_logits``; see the module docstring.

    Args:
        nets: one network per fold, in eval mode (their logits are averaged).
        mirror_axes: spatial axes of the patch mirrored for test-time augmentation (``None``: none).
        progress: called with 1 after each window.
        amp: precision of the network pass: ``"none"`` (float32), ``"bf16"`` or ``"auto"`` (see above); the
            backend's own precision, when not ``"auto"``, wins.
        backend: what runs the networks (keep one object for all cases: each network is converted or measured
            once); ``None``: PyTorch.
        cache_dir: the model folder, where OpenVINO caches its converted networks (``None``: in memory).
    """
    patch = tuple(int(p) for p in patch)
    spatial = data.shape[1:]
    lead = spatial[:len(spatial) - len(patch)]
    plane = spatial[len(lead):]
    target = tuple(max(s, p) for s, p in zip(plane, patch))
    below = [(t - s) // 2 for s, t in zip(plane, target)]
    padded = np.zeros((data.shape[0], *lead, *target), np.float32)
    padded[(slice(None),) + tuple(slice(None) for _ in lead)
           + tuple(slice(b, b + s) for b, s in zip(below, plane))] = data
    source = torch.from_numpy(padded)
    weight = torch.from_numpy(np.array(gaussian_importance_map(patch)))
    accum = torch.zeros((num_outputs, *lead, *target), dtype=torch.float32)
    norm = torch.zeros(target, dtype=torch.float32)
    starts = list(itertools.product(*[window_starts(t, p, 1 - TILE_STEP) for t, p in zip(target, patch)]))
    for start in starts:
        norm[tuple(slice(s, s + p) for s, p in zip(start, patch))] += weight
    mirrors = _mirror_sets(mirror_axes, len(patch))
    backend = backend or InferenceBackend("torch")
    batch_shape = (len(mirrors), data.shape[0], *patch)
    runners = [backend.predictor(net, amp, batch_shape, torch.device("cpu"), cache_dir) for net in nets]
    with torch.inference_mode():
        for lead_index in itertools.product(*[range(n) for n in lead]):
            for start in starts:
                sl = tuple(slice(s, s + p) for s, p in zip(start, patch))
                x = source[(slice(None),) + lead_index + sl][None].contiguous()
                accum[(slice(None),) + lead_index + sl] += _window_logits(runners, x, mirrors) * weight
                if progress is not None:
                    progress(1)
    accum /= norm
    return accum[(slice(None),) + tuple(slice(None) for _ in lead)
                 + tuple(slice(b, b + s) for b, s in zip(below, plane))]


def _export_labels(model: NnunetModel, case: NnunetCase, logits: torch.Tensor, info: NnunetLabels) -> np.ndarray:
    """Labels in the input's array axes: resample to the cropped grid, uncrop, transpose back."""
    forward = list(model.plans.get("transpose_forward", [0, 1, 2]))
    backward = list(model.plans.get("transpose_backward", [0, 1, 2]))
    spacing_t = [case.spacing[i] for i in forward]
    current = list(model.configuration["spacing"])
    if len(current) < 3:
        current = [spacing_t[0], *current]
    kw = model.configuration.get("resampling_fn_probabilities_kwargs", {})
    labels = logits_to_labels(logits, case.shape_after_cropping, current, spacing_t, info.regions,
                              kw.get("order", 1), kw.get("order_z", 0), kw.get("force_separate_z"))
    full = np.zeros(case.shape_before_cropping, np.uint8 if info.max_label < 255 else np.uint16)
    full[tuple(slice(a, b) for a, b in case.bbox)] = labels
    return full.transpose(backward)


def _write_labels(labels: np.ndarray, case: NnunetCase, out: Path) -> Path:
    """Write with the input's SimpleITK geometry to a temporary name, then rename (never half-written)."""
    array = labels[0] if case.two_d_input else labels
    image = sitk.GetImageFromArray(array.astype(np.uint8 if array.max() < 255 else np.uint16, copy=False))
    image.SetSpacing(case.sitk_geometry["spacing"])
    image.SetOrigin(case.sitk_geometry["origin"])
    image.SetDirection(case.sitk_geometry["direction"])
    tmp = out.with_name(f".tmp{os.getpid()}_{out.name}")
    try:
        sitk.WriteImage(image, str(tmp), True)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def predict_nnunet_case(model: NnunetModel, nets: Sequence[torch.nn.Module], paths: Sequence[Path], out: Path,
                        mirror: bool = True, progress: Callable[[int], None] | None = None, amp: str = "none",
                        backend: InferenceBackend | None = None, cache_dir: Path | None = None) -> Path:
    """Predict one case (its channel files in order) and write its label map to ``out`` (``amp``, ``backend``,
    ``cache_dir``: see :func:`sliding_window_logits`)."""
    info = nnunet_label_info(model.dataset, model.folder / "dataset.json")
    case = preprocess_case(model, paths)
    axes = model.folds[0].mirror_axes if mirror else None
    logits = sliding_window_logits(nets, case.data, model.configuration["patch_size"], info.num_outputs, axes,
                                   progress, amp, backend, cache_dir)
    return _write_labels(_export_labels(model, case, logits, info), case, out)


def find_nnunet_cases(input_path: Path, num_channels: int, file_ending: str) -> dict[str, list[Path]]:
    """Cases of an nnU-Net input: a folder of ``<case>_<XXXX><file_ending>`` files (channel ``XXXX``), or one
    such file (its case's other channels beside it), or any single image for a one-channel model.

    Raises:
        InputError: nothing found, or a case missing a channel.
    """
    pattern = re.compile(r"^(.*)_(\d{4})" + re.escape(file_ending) + "$")
    if input_path.is_file():
        match = pattern.match(input_path.name)
        if match is None:
            if num_channels == 1:
                return {input_path.name[:-len(file_ending)] if input_path.name.endswith(file_ending)
                        else input_path.stem: [input_path]}
            raise InputError(input_path, f"name it <case>_0000{file_ending} (nnU-Net's channel naming)")
        files = sorted(input_path.parent.glob(f"{_glob_escape(match.group(1))}_[0-9][0-9][0-9][0-9]{file_ending}"))
    elif input_path.is_dir():
        files = sorted(input_path.glob(f"*{file_ending}"))
    else:
        raise InputError(input_path, "input not found")
    cases: dict[str, dict[int, Path]] = {}
    for f in files:
        match = pattern.match(f.name)
        if match is not None:
            cases.setdefault(match.group(1), {})[int(match.group(2))] = f
    if not cases:
        raise InputError(input_path, f"no <case>_0000{file_ending} files (nnU-Net's channel naming)")
    for name, channels in cases.items():
        missing = [f"{c:04d}" for c in range(num_channels) if c not in channels]
        if missing:
            raise InputError(input_path, f"case {name!r} lacks channel(s) {', '.join(missing)} "
                                         f"(the model takes {num_channels})")
    return {name: [ch[c] for c in range(num_channels)] for name, ch in sorted(cases.items())}


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def load_nnunet_networks(model: NnunetModel) -> list[torch.nn.Module]:
    """One network per fold of ``model``, weights loaded, in eval mode, on the CPU.

    Each network is built without weights (on PyTorch's ``meta`` device) and takes the fold's float32 weight
    tensors as its parameters, so a fold's weights are held once, not copied: for a ResEnc M model that is about
    100 MB less memory than loading into a built network.

    Raises:
        InputError: weights that do not fit the network ``plans.json`` describes.
    """
    info = nnunet_label_info(model.dataset, model.folder / "dataset.json")
    nets = []
    for fold in model.folds:
        with torch.device("meta"):
            net = build_nnunet_network(model.configuration["architecture"], model.num_channels, info.num_outputs,
                                       model.folder / "plans.json")
        fold.weights = {k: v.float() if v.is_floating_point() else v for k, v in fold.weights.items()}
        try:
            net.load_state_dict(fold.weights, assign=True)
        except RuntimeError as exc:
            lines = str(exc).splitlines()
            raise InputError(fold.path, "weights do not fit the network of plans.json "
                                        f"({(lines[1] if len(lines) > 1 else lines[0]).strip()})") from None
        nets.append(net.eval())
    return nets


def predict_nnunet_path(model_folder: str | Path, input_path: str | Path, out: str | Path,
                        folds: str | Sequence[int | str] | None = None, which: str = "best", tta: str = "mirror",
                        amp: str = "auto", log: Callable[[str], None] | None = None,
                        backend: str | InferenceBackend = "auto") -> list[tuple[str, Path, float]]:
    """``voxseg predict NNUNET_MODEL_FOLDER INPUT OUT``: label maps as ``nnUNetv2_predict`` writes them.

    Args:
        model_folder: an nnU-Net model folder, or a model package of one (``voxseg export``; zip or unpacked).
        input_path: a folder of ``<case>_<XXXX>`` files, or one case's file.
        out: a folder (``<case><file_ending>`` each) or, for one case, a file name ending in the file ending.
        folds, which: see :func:`voxseg.infer.nnunet.load_nnunet_model` (a package: its folds, and
            :func:`voxseg.infer.nnunet.load_nnunet_package`).
        tta: ``"none"`` turns off nnU-Net's mirroring; anything else keeps it (the default, as in nnU-Net).
        amp: ``"auto"`` (bf16 where faster), ``"bf16"`` or ``"none"`` (float32, nnU-Net's own numerics).
        backend: ``"auto"``, ``"torch"`` or ``"openvino"`` (:mod:`voxseg.infer.backends`), or a backend object
            (its precision, when not ``"auto"``, wins over ``amp``). OpenVINO's converted networks are cached in
            the model folder when it is writable; a package's are kept in memory.

    Returns:
        ``(case, label file, seconds)`` per case.
    """
    engine = backend if isinstance(backend, InferenceBackend) else InferenceBackend(backend)
    model = load_nnunet_source(model_folder, folds, which)
    nets = load_nnunet_networks(model)
    cases = find_nnunet_cases(Path(input_path), model.num_channels, model.file_ending)
    out = Path(out)
    single = out.name.endswith(model.file_ending)
    if single and len(cases) != 1:
        raise InputError(out, f"a single output file was given but the input holds {len(cases)} cases")
    (out.parent if single else out).mkdir(parents=True, exist_ok=True)
    mirror = str(tta).lower() != "none"
    cache_dir = None if is_package(model.folder) else model.folder
    if log is not None:
        axes = model.folds[0].mirror_axes if mirror else None
        arch = str(model.configuration["architecture"]["network_class_name"]).rsplit(".", 1)[-1]
        log(f"nnU-Net {model.configuration_name} {arch}: folds {', '.join(f.name for f in model.folds)}; "
            f"mirroring axes: {axes or 'none'}; backend: {engine.name}, precision: {'fp32' if amp == 'none' else amp}")
    results = []
    for name, paths in cases.items():
        start = time.perf_counter()
        target = out if single else out / f"{name}{model.file_ending}"
        predict_nnunet_case(model, nets, paths, target, mirror, amp=amp, backend=engine, cache_dir=cache_dir)
        results.append((name, target, time.perf_counter() - start))
    if log is not None:
        log(f"networks ran with: {', '.join(sorted(set(engine.choices.values())))}")
    return results
