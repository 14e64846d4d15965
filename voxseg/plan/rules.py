"""The planner's rules: each a small pure function of measurable inputs (the dataset's spacing, scan extent, number
of cases, channel names, the thickness of its thinnest structure, the time budget) returning a :class:`Choice`, the
value with the one-line reason the planner logs and saves in ``plan.json`` (``planner_notes``).

A rule decides only what the user left unset; docs/training.md ("How the planner chooses") names the measurement
behind each threshold, or says that it is not yet measured.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from voxseg.train.validation import VALIDATION_SHARE

__all__ = ["COARSE_SPACING_MM", "FEW_PATCHES", "MANY_PATCHES", "SHORT_BUDGET_MINUTES", "Choice", "augmentation_rule",
           "checkpoint_rule", "large_cases_in_short_budget", "median_extent_mm", "median_or_none", "modality",
           "MIN_DEEPEST_VOXELS", "n4_rule", "n4_seconds", "network_depth_rule", "optimizer_rule", "patches_per_case", "structure_thickness_mm", "validation_rule", "working_spacing_rule"]

COARSE_SPACING_MM = 2.0
"""The coarser working spacing (isotropic, mm): the one ``benchmarks/brats.py`` measured."""
SHORT_BUDGET_MINUTES = 120.0
"""Time budgets up to this many minutes count as short (measured at 60: ``benchmarks/brats.py``)."""
MANY_PATCHES = 8.0
"""A median scan that holds more patches than this at its own spacing is coarsened (when the other conditions hold)."""
FEW_PATCHES = 100.0
"""Datasets holding fewer patches than this (cases x patches per case) get the full augmentation chain under the
short-budget rule (measured: BraTS, 43, gained with it as part of a bundle; IBSR18, 224, and the hippocampus lost)."""
N4_SECONDS_PER_MVOXEL = 2.3
"""Seconds of N4 (shrink 4, voxseg's defaults) per million voxels of one channel: one BraTS channel of 240x240x155
voxels took about 20 s on a shared 2-core machine. Counted on the file's voxels (N4 runs on the crop: fewer)."""
MIN_DEEPEST_VOXELS = 4
"""Voxels a down-sampled axis keeps at the network's deepest stage, at least: nnU-Net's minimum feature map size
(``get_pool_and_conv_props``, Isensee et al. 2021)."""
_PATCH_SIDE = 64  # the CPU patch cap's side (voxseg.plan.CPU_DEFAULTS), voxels
_MR_NAMES = ("t1", "t2", "flair", "mr", "mri", "pd", "dwi", "adc", "swi", "t1ce", "t1c", "t1gd", "t2w", "t1w")


@dataclass(frozen=True)
class Choice:
    """A rule's decision: ``name`` (what is decided), ``value`` and the one-line ``reason``."""

    name: str
    value: Any
    reason: str

    def note(self) -> str:
        """``"name: value (reason)"``, as logged and saved in ``plan.json``."""
        value = self.value
        if isinstance(value, (tuple, list)):
            numbers = all(isinstance(v, (int, float)) for v in value)
            value = ("x" if numbers else " ").join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in value)
        return f"{self.name}: {value} ({self.reason})"


def _mm(values: Sequence[float]) -> str:
    return "x".join(f"{v:.3g}" for v in values)


def patches_per_case(extent_mm: Sequence[float], spacing_mm: Sequence[float], patch_side: int = _PATCH_SIDE) -> float:
    """How many ``patch_side``^3-voxel patches fill a scan of ``extent_mm`` (Z, Y, X, mm) at ``spacing_mm``."""
    return float(np.prod([e / (s * patch_side) for e, s in zip(extent_mm, spacing_mm)]))


def structure_thickness_mm(label: np.ndarray, spacing_mm: Sequence[float], values: Iterable[int]) -> float | None:
    """Mean thickness (mm) of the structure made of ``values`` in ``label`` (``(Z, Y, X)``): twice its volume over
    its surface (2V/S; a slab of thickness t gives t, a ball of diameter d gives d/3), the surface counted on voxel
    faces. ``None`` when the structure is absent."""
    mask = np.isin(label, list(values))
    if not mask.any():
        return None
    volume = float(mask.sum()) * float(np.prod(spacing_mm))
    surface = 0.0
    for axis in range(3):
        face = float(np.prod([s for a, s in enumerate(spacing_mm) if a != axis]))
        inner = np.count_nonzero(np.diff(mask, axis=axis))
        border = np.count_nonzero(mask.take(0, axis=axis)) + np.count_nonzero(mask.take(-1, axis=axis))
        surface += (inner + border) * face
    return 2.0 * volume / surface


def working_spacing_rule(spacing_mm: Sequence[float], extent_mm: Sequence[float], budget_minutes: float | None,
                         thinnest_mm: float | None) -> Choice:
    """The spacing to train at: :data:`COARSE_SPACING_MM` isotropic when all of these hold, else each case's own
    (value ``None``):

    - a short budget (``budget_minutes`` <= :data:`SHORT_BUDGET_MINUTES`);
    - fine, isotropic-ish voxels (the coarsest axis <= 1.25 mm and <= 1.25x the finest);
    - a large scan: the median scan (``extent_mm``, Z, Y, X) holds more than :data:`MANY_PATCHES` 64^3 patches at
      ``spacing_mm`` (the median spacing);
    - no thin structure: the thinnest structure's median thickness ``thinnest_mm`` (:func:`structure_thickness_mm`)
      is at least the coarse spacing (``None``: not measured, kept).
    """
    fine = max(spacing_mm) <= 1.25 and max(spacing_mm) <= 1.25 * min(spacing_mm)
    need = patches_per_case(extent_mm, spacing_mm)
    coarse = (COARSE_SPACING_MM,) * 3
    where = f"the median scan ({_mm(extent_mm)} mm at {_mm(spacing_mm)} mm) holds {need:.3g} patches of 64^3"
    if not budget_minutes or budget_minutes > SHORT_BUDGET_MINUTES:
        why = f"no time budget of at most {SHORT_BUDGET_MINUTES:g} minutes"
    elif not fine:
        why = "voxels not fine and isotropic-ish (coarsest axis <= 1.25 mm and <= 1.25x the finest)"
    elif need <= MANY_PATCHES:
        why = f"{where}, not more than {MANY_PATCHES:g}"
    elif thinnest_mm is None or thinnest_mm < COARSE_SPACING_MM:
        shown = "not measured" if thinnest_mm is None else f"{thinnest_mm:.2g} mm thick"
        why = f"{where}, but the thinnest structure is {shown}, under {COARSE_SPACING_MM:g} mm"
    else:
        return Choice("working spacing", coarse,
                      f"{where}, {patches_per_case(extent_mm, coarse):.2g} at {COARSE_SPACING_MM:g} mm; thinnest "
                      f"structure {thinnest_mm:.2g} mm thick; {budget_minutes:g}-minute budget; --spacing sets another")
    return Choice("working spacing", None, f"each case's own: {why}")


def large_cases_in_short_budget(patches: float, budget_minutes: float | None) -> bool:
    """Whether a patch sees only part of a case (``patches`` per case at the working spacing > 1) and the budget is
    short: the regime whose settings ``benchmarks/brats.py`` measured as one bundle (Adam, full augmentation, N4)."""
    return patches > 1.0 and bool(budget_minutes) and budget_minutes <= SHORT_BUDGET_MINUTES


def optimizer_rule(patches: float, budget_minutes: float | None) -> Choice:
    """``("adam", 1e-3)`` with large cases in a short budget (:func:`large_cases_in_short_budget`), else
    ``("sgd", 0.01)`` (Nesterov, Isensee et al. 2021); the poly schedule either way."""
    if large_cases_in_short_budget(patches, budget_minutes):
        return Choice("optimiser", ("adam", 1e-3), f"a case holds {patches:.2g} patches and the budget is "
                                                   f"{budget_minutes:g} minutes: Adam 1e-3 with poly decay")
    return Choice("optimiser", ("sgd", 0.01), f"a case holds {patches:.2g} patches, budget "
                                              f"{budget_minutes or 'none'}: SGD 0.01 (Nesterov) with poly decay")


def augmentation_rule(n_cases: int, patches: float, budget_minutes: float | None) -> Choice:
    """``"default"`` (the full chain) with large cases in a short budget when the dataset holds fewer than
    :data:`FEW_PATCHES` patches (``n_cases`` x ``patches`` per case at the working spacing), else ``"flips"``."""
    held = n_cases * patches
    if held < FEW_PATCHES and large_cases_in_short_budget(patches, budget_minutes):
        return Choice("augmentation", "default", f"{n_cases} cases of {patches:.2g} patches: {held:.3g} patches "
                                                 f"(< {FEW_PATCHES:g}), the full chain")
    return Choice("augmentation", "flips", f"{n_cases} cases of {patches:.2g} patches ({held:.3g}), budget "
                                           f"{budget_minutes or 'none'}: flips")


def modality(channel_names: Sequence[str]) -> str:
    """``"CT"`` when every channel is named CT, ``"MR"`` when every one names an MR sequence (t1, t2, flair, ...),
    else ``"unknown"``."""
    names = [str(c).strip().lower() for c in channel_names]
    if names and all(n == "ct" for n in names):
        return "CT"
    if names and all(n in _MR_NAMES for n in names):
        return "MR"
    return "unknown"


def n4_seconds(voxels_per_case: float, channels: int, n_cases: int) -> float:
    """Estimated seconds of N4 for a dataset: :data:`N4_SECONDS_PER_MVOXEL` per million voxels per channel."""
    return N4_SECONDS_PER_MVOXEL * voxels_per_case / 1e6 * channels * n_cases


def n4_rule(channel_names: Sequence[str], patches: float, budget_minutes: float | None,
            estimated_seconds: float) -> Choice:
    """N4 bias-field correction (Tustison et al. 2010) for MR channels with large cases in a short budget, when its
    estimated time (``estimated_seconds``, :func:`n4_seconds`; preprocessing, cached once, outside the training
    budget) adds at most a quarter of the budget to the wait; else off."""
    kind = modality(channel_names)
    if kind != "MR":
        return Choice("N4", False, f"channels {', '.join(channel_names)}: not named as MR sequences")
    if not large_cases_in_short_budget(patches, budget_minutes):
        return Choice("N4", False, f"MR, but a case holds {patches:.2g} patches, budget {budget_minutes or 'none'}")
    if estimated_seconds > 15.0 * budget_minutes:
        return Choice("N4", False, f"MR, but N4 would take about {estimated_seconds / 60:.2g} minutes, over a "
                                   "quarter of the budget")
    return Choice("N4", True, f"MR channels, a case holds {patches:.2g} patches, N4 takes about "
                              f"{estimated_seconds / 60:.2g} minutes (preprocessing, outside the budget)")


def validation_rule(val_fraction: float, budget_minutes: float | None) -> Choice:
    """How validation is budgeted (what training does; said for the record)."""
    if val_fraction <= 0:
        return Choice("validation", "none", "no validation cases (--val-fraction 0)")
    if not budget_minutes:
        return Choice("validation", "every --val-every epochs", "no time budget")
    return Choice("validation", f"at most {VALIDATION_SHARE:.0%} of the budget",
                  "each validation timed; a due one is skipped while validating would exceed that share, and "
                  "training stops early enough for the final one")


def checkpoint_rule(val_fraction: float) -> Choice:
    """Which weights prediction uses: the best by validation Dice when there are validation cases, else the last."""
    if val_fraction > 0:
        return Choice("weights kept", "best", "checkpoint_best.pt by validation Dice (checkpoint_last.pt kept too)")
    return Choice("weights kept", "last", "no validation cases to choose by")


def network_depth_rule(patch: Sequence[int], strides: Sequence[Sequence[int]], default_depth: int,
                       min_depth: int = 3) -> Choice:
    """The network's number of resolution stages for a patch: one more than the most down-sampling steps (the
    first of ``strides``) after which every axis they down-sample keeps at least :data:`MIN_DEEPEST_VOXELS` voxels
    (nnU-Net's rule, Isensee et al. 2021, with the steps' strides fixed beforehand), at most ``default_depth`` (the
    preset's) and at least ``min_depth``.

    Args:
        patch: the patch along the network's axes, voxels (``(Z, Y, X)`` or ``(Y, X)``).
        strides: the preset's down-sampling steps, ``default_depth - 1`` of them, one stride per axis each.
        default_depth: the preset's number of stages (the cap).
        min_depth: the fewest stages the network takes.
    """
    size = [float(p) for p in patch]
    steps = 0
    for step in list(strides)[:default_depth - 1]:
        after = [s / st for s, st in zip(size, step)]
        if any(st > 1 and a < MIN_DEEPEST_VOXELS for a, st in zip(after, step)):
            break
        size, steps = after, steps + 1
    depth = max(min_depth, steps + 1)
    shown = "x".join(str(int(p)) for p in patch)
    deepest = "x".join(f"{v:g}" for v in size)
    if steps + 1 == default_depth:
        why = f"patch {shown} keeps {deepest} voxels after the preset's {steps} down-sampling steps"
    elif steps + 1 < min_depth:
        why = f"patch {shown} is too small for {min_depth - 1} down-sampling steps at {MIN_DEEPEST_VOXELS} voxels: " \
              f"the fewest stages, {min_depth}"
    else:
        why = (f"patch {shown}: {steps} down-sampling steps leave {deepest} voxels, one more would leave an axis under "
               f"{MIN_DEEPEST_VOXELS} (the preset has {default_depth} stages)")
    return Choice("network depth", depth, f"{why}; --net-args depth=N sets another")


def median_extent_mm(spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]]) -> list[float]:
    """The median scan extent (Z, Y, X, mm) of cases with these spacings (mm) and shapes (voxels)."""
    extents = np.asarray(spacings, dtype=np.float64) * np.asarray(shapes, dtype=np.float64)
    return [float(v) for v in np.median(extents, axis=0)]


def median_or_none(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not ``None`` (``None`` when none are)."""
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(kept)) if kept else None
