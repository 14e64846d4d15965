"""Ensembles: average the folds of a run, or several runs, in probability space.

Averaging (Henry et al. 2021, section 2.6, first step: "models ... were ensembled ... by simple predictions
averaging"): every member preprocesses the case with its *own* plan (so a z-score and a min-max
model can be combined), predicts (with TTA) in its cropped, resampled space, and the mean is put
back on the ORIGINAL voxel grid, where members are averaged. Members sharing a preprocessing (the
folds of one run) share one preprocessing, one running mean in the cropped space and one
restoration. Members must share label scheme, label values and channel order
(:func:`check_members`).

Merging the label maps of several pipelines, label by label, is :mod:`voxseg.infer.merge`.

References:
    Henry T. et al. (2021) Brain tumor segmentation with self-ensembled, deeply-supervised 3D U-net
    neural networks: a BraTS 2020 challenge solution. BrainLes 2020, LNCS 12658, section 2.6.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from voxseg.data.preprocess import PreprocessedCase, preprocess_case, restore_to_original
from voxseg.errors import InputError
from voxseg.data.fingerprint import DatasetFingerprint
from voxseg.config import RunPlan
from voxseg.infer.backends import InferenceBackend
from voxseg.infer.model_files import CHECKPOINT_BEST, CHECKPOINT_LAST, load_model
from voxseg.infer.package import is_package, open_package
from voxseg.infer.sliding_window import predict_volume
from voxseg.infer.tta import TTAVariant, tta_predict, tta_variants
from voxseg.infer.uncertainty import PredictionAccumulator, mi_from_moments
from voxseg.infer.windows import window_grid

__all__ = ["EnsembleMember", "EnsemblePrediction", "member_dirs", "load_members", "check_members",
           "ensemble_predict", "prepare_groups", "count_windows", "predict_groups", "combine_predictions"]


@dataclass
class EnsembleMember:
    """One trained network and the plan it was trained with.

    Attributes:
        model: the network, in eval mode (moved to the prediction's device when one is given).
        plan: its :class:`RunPlan` (preprocessing, window, label scheme).
        source: the folder it was loaded from (for messages).
        fingerprint: spacings and shapes of its training cases (``fingerprint.json``), when the run saved one.
    """

    model: torch.nn.Module
    plan: RunPlan
    source: Path = Path(".")
    fingerprint: DatasetFingerprint | None = None

    @property
    def activation(self) -> str:
        return self.plan.activation


def member_dirs(run_dir: str | Path, folds: str | Sequence[int] | None = None) -> list[Path]:
    """The model folders of a run.

    Args:
        run_dir: a run folder: ``plan.json`` + checkpoints, and/or k-fold subfolders ``fold_<i>/``
            each holding ``plan.json`` + checkpoints.
        folds: ``None``: the run's own model, or all its folds when it has no checkpoint at the top;
            ``"all"``: every ``fold_*`` subfolder; a list of fold numbers, or a string such as ``"0,2"``.

    Raises:
        InputError: not a run folder, or the requested folds are missing.
    """
    run_dir = Path(run_dir)
    fold_dirs = sorted((p for p in run_dir.glob("fold_*") if (p / "plan.json").exists()),
                       key=lambda p: (len(p.name), p.name))
    if folds is None:
        # A cross-validation run has a top-level plan.json but its checkpoints are in the folds.
        has_model = any((run_dir / name).exists() for name in (CHECKPOINT_BEST, CHECKPOINT_LAST))
        if (run_dir / "plan.json").exists() and (has_model or not fold_dirs):
            return [run_dir]
        if fold_dirs:
            return fold_dirs
        raise InputError(run_dir, "not a voxseg run folder (no plan.json and no fold_*/plan.json); "
                                  "train one with 'voxseg train'")
    if not fold_dirs:
        raise InputError(run_dir, "--folds was given but the run has no fold_*/ subfolders with a plan.json")
    if folds == "all":
        return fold_dirs
    try:
        wanted = [int(f) for f in (folds.split(",") if isinstance(folds, str) else folds)]
    except ValueError:
        raise InputError(run_dir, f"--folds must be 'all' or fold numbers such as 0,2; got {folds!r}") from None
    by_name = {p.name: p for p in fold_dirs}
    missing = [f for f in wanted if f"fold_{f}" not in by_name]
    if missing:
        raise InputError(run_dir, f"folds {missing} not found; the run has {', '.join(sorted(by_name))}")
    return [by_name[f"fold_{f}"] for f in wanted]


def load_members(run_dirs: Sequence[str | Path], folds: str | Sequence[int] | None = None,
                 which: str = "best", device: torch.device | str = "cpu") -> list[EnsembleMember]:
    """Load every model of ``run_dirs`` (see :func:`member_dirs`; a model package, zip or unpacked, gives its
    models the same way: :mod:`voxseg.infer.package`) onto ``device`` and check they can be averaged."""
    members = []
    for run_dir in run_dirs:
        if is_package(run_dir):
            package = open_package(run_dir)
            for prefix in package.model_prefixes(folds):
                model, plan = package.load_model(prefix, which, device)
                members.append(EnsembleMember(model, plan, package.source(prefix), package.fingerprint(prefix)))
            continue
        for folder in member_dirs(run_dir, folds):
            model, plan = load_model(folder, which, device)
            members.append(EnsembleMember(model, plan, folder, DatasetFingerprint.load(folder)))
    check_members(members)
    return members


def check_members(members: Sequence[EnsembleMember]) -> None:
    """Refuse members whose outputs cannot be averaged.

    Raises:
        InputError: no members, or a member whose label scheme, label values, number of outputs or
            input channels (names and order) differ from the first member's; names both folders.
    """
    if not members:
        raise InputError(Path("."), "no models to predict with")
    first = members[0]
    for member in members[1:]:
        for what, a, b in [("label scheme", first.plan.scheme.to_dict(), member.plan.scheme.to_dict()),
                           ("label values", first.plan.label_values, member.plan.label_values),
                           ("number of outputs", first.plan.num_outputs, member.plan.num_outputs),
                           ("input channels", first.plan.channel_names, member.plan.channel_names)]:
            if a != b:
                raise InputError(member.source, f"cannot be ensembled with {first.source}: {what} {b} != {a}")


def _predictor(member: EnsembleMember, device: torch.device | None, transposed: bool,
               progress: Callable[[int], None] | None, backend: InferenceBackend | None = None
               ) -> Callable[[np.ndarray], np.ndarray]:
    plan = member.plan
    if transposed:
        # Quarter-turned image: exchange the window's Y and X sizes so the network sees the same context.
        plan = copy.deepcopy(plan)
        pz, py, px = plan.train.patch_size
        plan.train.patch_size = [pz, px, py]
    cache_dir = member.source if (member.source / "plan.json").exists() else None  # a run (or fold) folder
    return lambda image: predict_volume(member.model, plan, image, device, progress=progress, backend=backend,
                                        cache_dir=cache_dir)


@dataclass
class EnsemblePrediction:
    """Mean of several predictions on the original voxel grid.

    Attributes:
        probabilities: ``(K, Z, Y, X)`` float32 mean probabilities (original geometry).
        mean_entropy: ``(Z, Y, X)`` float32 mean per-prediction entropy (nats) or ``None`` when
            uncertainty was not asked for.
        count: number of predictions averaged (members x TTA variants).
        activation: ``"softmax"`` or ``"sigmoid"``.
    """

    probabilities: np.ndarray
    mean_entropy: np.ndarray | None
    count: int
    activation: str

    def uncertainty(self) -> np.ndarray:
        """``(Z, Y, X)`` float32 mutual information in nats (see :mod:`voxseg.infer.uncertainty`)."""
        if self.mean_entropy is None:
            raise ValueError("uncertainty was not tracked; predict with uncertainty=True")
        return mi_from_moments(self.probabilities, self.mean_entropy, self.activation)


def combine_predictions(parts: Sequence[EnsemblePrediction]) -> EnsemblePrediction:
    """Pool several :class:`EnsemblePrediction` (weighted by their counts) into one."""
    if len(parts) == 1:
        return parts[0]
    total = sum(p.count for p in parts)
    probs = sum(p.probabilities * np.float32(p.count / total) for p in parts).astype(np.float32)
    entropy = None
    if all(p.mean_entropy is not None for p in parts):
        entropy = sum(p.mean_entropy * np.float32(p.count / total) for p in parts).astype(np.float32)
    return EnsemblePrediction(probs, entropy, total, parts[0].activation)


def ensemble_predict(
    members: Sequence[EnsembleMember],
    image: np.ndarray,
    spacing: Sequence[float],
    tta: str | int | Sequence[TTAVariant] = "none",
    uncertainty: bool = False,
    device: torch.device | None = None,
    progress: Callable[[int], None] | None = None,
    affine: np.ndarray | None = None,
    backend: InferenceBackend | None = None,
) -> EnsemblePrediction:
    """Average the TTA predictions of every member, on the case's original voxel grid.

    Memory: per preprocessing group one preprocessed image, one running sum ``(K, Z', Y', X')`` float32
    at the cropped size (plus one ``(Z', Y', X')`` entropy sum with ``uncertainty``), and one
    prediction in flight; restoration to the original size happens once per group.

    Args:
        members: from :func:`load_members` (checked with :func:`check_members`).
        image: ``(C, Z, Y, X)`` raw intensities in the members' channel order (as read from disk).
        spacing: ``(sz, sy, sx)`` in mm.
        tta: TTA name/count (:func:`voxseg.infer.tta.tta_variants`, resolved per member for 2-D/3-D)
            or an explicit variant list.
        uncertainty: also track per-prediction entropies (for :meth:`EnsemblePrediction.uncertainty`).
        device: where the members run and blend their windows (they are moved there); default: each
            member's own device.
        progress: called with the number of windows just predicted.
        affine: the file's voxel-to-world affine; needed by members whose runs reorient every scan
            (``plan.preprocess.orientation``).
        backend: what runs the networks on the windows (:class:`~voxseg.infer.backends.InferenceBackend`);
            default: PyTorch at each run's ``amp``.

    Returns:
        :class:`EnsemblePrediction` in the original geometry.
    """
    return predict_groups(prepare_groups(members, image, spacing, affine), tta, uncertainty, device, progress,
                          backend)


def prepare_groups(members: Sequence[EnsembleMember], image: np.ndarray, spacing: Sequence[float],
                   affine: np.ndarray | None = None) -> list[tuple[list[EnsembleMember], PreprocessedCase]]:
    """Preprocess ``image`` once per distinct preprocessing among ``members``.

    Split from :func:`predict_groups` so a caller can drop the full-size image before predicting.
    ``affine``: the file's voxel-to-world affine (runs that reorient every scan need it).

    Returns:
        ``[(members sharing a preprocessing, their preprocessed case), ...]``.
    """
    check_members(members)
    groups: dict[str, list[EnsembleMember]] = {}
    for member in members:
        groups.setdefault(json.dumps(member.plan.preprocess.to_dict(), sort_keys=True), []).append(member)
    return [(group, preprocess_case(image, spacing, group[0].plan.preprocess, affine=affine))
            for group in groups.values()]


def count_windows(groups: list[tuple[list[EnsembleMember], PreprocessedCase]],
                  tta: str | int | Sequence[TTAVariant] = "none") -> int:
    """How many windows :func:`predict_groups` will predict (for a progress bar with an ETA): per member
    and TTA variant, the sliding-window grid of its preprocessed volume (quarter turns exchange both the
    volume's and the window's Y and X, so their grid has the same size)."""
    total = 0
    for group, pre in groups:
        for member in group:
            variants = tta if not isinstance(tta, (str, int)) else tta_variants(tta, member.plan.network.spatial_dims)
            grid = window_grid(pre.image.shape[1:], member.plan.train.patch_size, member.plan.inference.overlap)
            total += len(variants) * math.prod(len(starts) for starts in grid)
    return total


def predict_groups(groups: list[tuple[list[EnsembleMember], PreprocessedCase]],
                   tta: str | int | Sequence[TTAVariant] = "none", uncertainty: bool = False,
                   device: torch.device | None = None,
                   progress: Callable[[int], None] | None = None,
                   backend: InferenceBackend | None = None) -> EnsemblePrediction:
    """Predict groups from :func:`prepare_groups` (arguments as :func:`ensemble_predict`).

    The list is emptied as it goes, so each preprocessed image is freed once its group is done.
    """
    activation = groups[0][0][0].activation
    background = None if activation == "sigmoid" else 0
    parts = []
    while groups:
        group, pre = groups.pop(0)
        acc = PredictionAccumulator(activation, track_uncertainty=uncertainty)
        for member in group:
            if device is not None:
                member.model.to(device)  # in place; a no-op where it already is
            variants = tta if not isinstance(tta, (str, int)) else tta_variants(tta, member.plan.network.spatial_dims)
            tta_predict(pre.image, _predictor(member, device, False, progress, backend), variants,
                        transposed_fn=_predictor(member, device, True, progress, backend), accumulator=acc)
        probs = restore_to_original(acc.mean(), pre.record, is_label=False, background_channel=background)
        entropy = None
        if uncertainty:
            # Outside the crop every member says "background" with certainty: entropy 0.
            entropy = restore_to_original(acc.mean_entropy()[None], pre.record, is_label=False,
                                          background_channel=None)[0]
        parts.append(EnsemblePrediction(probs, entropy, acc.count, activation))
        del pre, acc
    return combine_predictions(parts)
