"""Decisions taken from the data before any case is preprocessed (the cache depends on them): the voxel order,
the resampling target, the intensity normalisation (for CT, its window and statistics) and the label scheme.

``options`` here is a :class:`voxseg.config.TrainOptions`; each ``resolve_*`` returns a new one (the one passed in
is not changed) and says in one line what it decided. ``rows`` are the validation rows of the run's cases
(their first image's shape, spacing and voxel order, their label values), keyed by case id.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Callable

import numpy as np
from tqdm import tqdm

from voxseg.config import TrainOptions
from voxseg.data.fingerprint import SPACING_TOLERANCE, DatasetFingerprint, dataset_fingerprint
from voxseg.data.labels import LabelScheme, declared_regions_scheme
from voxseg.data.orientation import check_orientation_code, reoriented_spacing
from voxseg.data.preprocess import foreground_intensity_statistics
from voxseg.errors import InputError
from voxseg.infer.package import source_plan as init_source_plan
from voxseg.io.datasets import Case, Dataset, read_case
from voxseg.io.validate import CaseSummary
from voxseg.plan.plan import plan_target_spacing
from voxseg.plan.rules import (Choice, augmentation_rule, checkpoint_rule, median_extent_mm, median_or_none, n4_rule,
                               n4_seconds, optimizer_rule, patches_per_case, structure_thickness_mm,
                               validation_rule, working_spacing_rule)
from voxseg.io.image import read_volume

__all__ = ["resolve_label_scheme", "resolve_normalization", "resolve_options", "resolve_orientation",
           "resolve_planned", "resolve_spacing", "run_fingerprint"]


def resolve_options(options: TrainOptions, dataset: Dataset, cases: list[Case], rows: dict[str, CaseSummary],
                    log: Callable[[str], None], progress: bool = True):
    """``options`` with the voxel order, then the resampling, then the normalisation decided."""
    options = resolve_planned(resolve_orientation(options, rows, log), dataset, cases, rows, log)
    options = resolve_spacing(options, rows, log)
    return resolve_normalization(options, dataset, cases, log, progress)


_THICKNESS_CASES = 3  # cases whose labels are read to measure the thinnest structure


def resolve_planned(options: TrainOptions, dataset: Dataset, cases: list[Case], rows: dict[str, CaseSummary],
                    log: Callable[[str], None]):
    """``options`` with what the user left unset decided by the planner's rules (:mod:`voxseg.plan.rules`): the
    working spacing (``spacing`` None), the optimiser and its rate (``train.optimizer`` None), the augmentation
    (``augment`` None) and N4 (``preprocess.n4`` None); each choice, and how validation and the kept weights
    go, logged in one line and added to ``planner_notes`` (saved in plan.json)."""
    spacings, shapes = _spacings_and_shapes(rows, options.preprocess.orientation)
    if not spacings:
        return options
    budget = options.train.time_budget_minutes
    spacing = [float(v) for v in np.median(np.asarray(spacings, dtype=np.float64), axis=0)]
    extent = median_extent_mm(spacings, shapes)
    choices: list[Choice] = []
    if options.spacing is None and options.preprocess.target_spacing is None:
        choice = working_spacing_rule(spacing, extent, budget, float("inf"))
        if choice.value is not None:  # only then are labels read, to measure the thinnest structure
            choice = working_spacing_rule(spacing, extent, budget, _thinnest_mm(options, dataset, cases))
        choices.append(choice)
        options = dataclasses.replace(options, spacing=choice.value or "none")
    working = options.preprocess.target_spacing or (options.spacing if not isinstance(options.spacing, str)
                                                    else spacing)
    patches = patches_per_case(extent, working)
    train, pre, augment = options.train, options.preprocess, options.augment
    if train.optimizer is None:
        choices.append(optimizer_rule(patches, budget))
        name, lr = choices[-1].value
        train = dataclasses.replace(train, optimizer=name, lr=train.lr if train.lr is not None else lr)
    if augment is None:
        choices.append(augmentation_rule(len(cases), patches, budget))
        augment = choices[-1].value
    if pre.n4 is None:
        seconds = n4_seconds(float(np.prod(np.median(np.asarray(shapes), axis=0))), len(dataset.channel_names),
                             len(cases))
        choices.append(n4_rule(dataset.channel_names, patches, budget, seconds))
        pre = dataclasses.replace(pre, n4=choices[-1].value)
    choices += [validation_rule(train.val_fraction, budget), checkpoint_rule(train.val_fraction)]
    notes = [c.note() for c in choices]
    for note in notes:
        log(f"planner: {note}")
    return dataclasses.replace(options, train=train, preprocess=pre, augment=augment,
                               planner_notes=[*options.planner_notes, *notes])


def _thinnest_mm(options: TrainOptions, dataset: Dataset, cases: list[Case]) -> float | None:
    """Median, over the first few labelled cases, of the thinnest scored structure's thickness (mm,
    :func:`voxseg.plan.rules.structure_thickness_mm`): each region of a region scheme, else each label value."""
    scheme = resolve_label_scheme(options, dataset)
    per_case = []
    for case in [c for c in cases if c.label_path][:_THICKNESS_CASES]:
        label, geometry = read_volume(case.label_path, dtype=None)
        structures = list(scheme.regions.values()) if scheme.is_region_based else \
            [[int(v)] for v in np.unique(label) if v != 0]
        found = [structure_thickness_mm(label, geometry.spacing, values) for values in structures]
        per_case.append(min((t for t in found if t is not None), default=None))
    return median_or_none(per_case)


def resolve_orientation(options: TrainOptions, rows: dict[str, CaseSummary], log: Callable[[str], None]):
    """``options`` with the voxel order of its preprocessing decided (see ``TrainOptions.orientation``);
    the cases stored in another order are named, as they are flipped / permuted to it."""
    choice = options.orientation
    target = options.preprocess.orientation
    if target is None and choice is not None and str(choice).lower() not in ("auto", "none"):
        target = check_orientation_code(choice)
    codes = {case_id: row.orientation for case_id, row in rows.items()}
    source = init_source_plan(options.train.init_from) if options.train.init_from else None
    if target is None and str(choice).lower() == "auto" and source is not None:
        target = source.preprocess.orientation  # weights learnt in that voxel order
        if target:
            log(f"orientation: {target}, the voxel order the run in --init-from was trained in")
    if target is None and str(choice).lower() == "auto":
        counts = Counter(code for code in codes.values() if code)
        target = counts.most_common(1)[0][0] if counts else None  # a tie goes to the first case's order
    if target is not None:
        others = sorted(f"{case_id} ({code})" for case_id, code in codes.items() if code and code != target)
        if others:
            log(f"orientation: {len(others)} of {len(rows)} cases are stored in another voxel order than "
                f"{target}: {', '.join(others[:10])}{' ...' if len(others) > 10 else ''}; they are flipped / "
                f"permuted to {target} (exactly, no interpolation) for training, as every scan is at prediction")
    return dataclasses.replace(options, preprocess=dataclasses.replace(options.preprocess, orientation=target))


def resolve_spacing(options: TrainOptions, rows: dict[str, CaseSummary], log: Callable[[str], None]):
    """``options`` with the resampling decided (see ``TrainOptions.spacing``): a spacing the user gave (mm,
    Z, Y, X) is every case's target; otherwise, when the cases' spacings differ, with ``"auto"`` they are
    resampled to nnU-Net's target spacing, with ``"none"`` they keep their own grids; either way one line says so."""
    if options.spacing is None:  # not planned (resolve_planned plans it): as "none"
        options = dataclasses.replace(options, spacing="none")
    if not isinstance(options.spacing, str):
        target = tuple(float(v) for v in options.spacing)
        return dataclasses.replace(options, preprocess=dataclasses.replace(options.preprocess, target_spacing=target))
    if options.preprocess.target_spacing is not None:
        return options
    spacings, shapes = _spacings_and_shapes(rows, options.preprocess.orientation)
    target = plan_target_spacing(spacings, shapes, SPACING_TOLERANCE) if spacings else None
    if target is None:
        return options
    sp = np.asarray(spacings, dtype=np.float64)
    ranges = ", ".join(f"{axis} {lo:.3g}-{hi:.3g}" for axis, lo, hi in zip("zyx", sp.min(0), sp.max(0))
                       if hi > SPACING_TOLERANCE * lo)
    shown = " x ".join(f"{v:.3g}" for v in target)
    if str(options.spacing).lower() != "auto":
        log(f"warning: the cases' voxel spacings differ ({ranges} mm): each is trained at its own grid, so the "
            f"network sees the anatomy at several scales; --spacing auto resamples them to {shown} mm (nnU-Net's "
            "target), --spacing Z,Y,X to another (on hippocampus with half the cases at 2 mm slices, resampling to "
            "nnU-Net's target did not help: benchmarks/anisotropic.py)")
        return options
    log(f"spacing: the cases' voxel spacings differ ({ranges} mm): every case is resampled to {shown} mm (Z x Y "
        "x X; nnU-Net's target: the median, the 10th percentile along a much coarser axis), and predictions back "
        "to each scan's own grid")
    return dataclasses.replace(options, preprocess=dataclasses.replace(options.preprocess, target_spacing=tuple(target)))


def resolve_normalization(options: TrainOptions, dataset: Dataset, cases: list[Case], log: Callable[[str], None],
                          progress: bool = True):
    """``options`` with the intensity normalisation decided (see ``TrainOptions.normalization``), and for CT
    its window and foreground statistics measured on the cases (before any of them is preprocessed: the
    cache depends on them)."""
    name = options.normalization
    if name is None:  # auto: CT for CT datasets unless the preprocessing asks for something other than the default
        all_ct = bool(dataset.channel_names) and all(c.strip().lower() == "ct" for c in dataset.channel_names)
        name = "ct" if all_ct and options.preprocess.normalization == "zscore" else options.preprocess.normalization
        if name == "ct" and options.preprocess.normalization != "ct":
            log("normalisation: ct (dataset.json names every channel CT; --normalization sets another)")
    pre = dataclasses.replace(options.preprocess, normalization=name)
    if pre.ct_window is not None and name != "ct":
        log(f"warning: the CT window {pre.ct_window[0]:g}..{pre.ct_window[1]:g} HU is not used: normalisation is "
            f"{name} (--normalization ct uses it)")
    if name == "ct" and (pre.ct_window is None or pre.ct_mean is None or pre.ct_std is None):
        pre = _measured_ct(pre, bool(options.preprocess.ct_window), dataset, cases, options.train.seed, log, progress)
    return dataclasses.replace(options, preprocess=pre)


def _measured_ct(pre, window_given: bool, dataset: Dataset, cases: list[Case], seed: int,
                 log: Callable[[str], None], progress: bool):
    """``pre`` (a PreprocessConfig) with the CT window (HU; kept when set) and the foreground mean and std measured
    on the labelled voxels of ``cases`` (:func:`voxseg.data.preprocess.foreground_intensity_statistics`)."""
    reading = tqdm(cases, desc="CT intensities", unit="case", disable=None if progress else True)
    pairs = ((image, label) for image, label, _ in (read_case(c, with_label=True) for c in reading))
    try:
        stats = foreground_intensity_statistics(pairs, seed=seed)
    except ValueError as exc:
        raise InputError(dataset.root, f"CT normalisation: {exc}") from None
    window = pre.ct_window or (round(stats["p00_5"], 2), round(stats["p99_5"], 2))
    if not window[0] < window[1] or not round(stats["std"], 4) > 0:
        raise InputError(dataset.root, f"CT normalisation: the labelled voxels of the {len(cases)} cases all hold "
                                       f"(nearly) one value, {stats['mean']:g}: no window or spread to "
                                       "normalise with; give --ct-window LO,HI, or another --normalization")
    pre = dataclasses.replace(pre, ct_window=window, ct_mean=round(stats["mean"], 4), ct_std=round(stats["std"], 4))
    log(f"CT normalisation: clip to [{window[0]:g}, {window[1]:g}] HU"
        + ("" if window_given else " (0.5th-99.5th percentile of the labelled voxels)")
        + f", then subtract {pre.ct_mean:g} and divide by {pre.ct_std:g} (their mean and std; "
        f"{stats['n']} voxels of the run's {len(cases)} cases, validation included, as nnU-Net does); "
        "saved in plan.json")
    return pre


def resolve_label_scheme(options: TrainOptions, dataset: Dataset) -> LabelScheme:
    """The user's scheme (``options.label_scheme``); unset: the regions the dataset.json declares, else classes."""
    name = options.label_scheme or ("regions" if dataset.label_regions else "classes")
    if name != "regions":
        return LabelScheme(name)
    where = dataset.root / "dataset.json" if dataset.layout == "nnunet" else dataset.root
    if not dataset.label_regions:
        raise InputError(where, "--label-scheme regions takes its regions from an nnU-Net dataset.json (\"labels\" "
                                "entries that list values, e.g. \"whole tumor\": [1, 2, 3]); this dataset declares none")
    return declared_regions_scheme(dataset.label_regions, dataset.region_labels, where)


def run_fingerprint(rows: dict[str, CaseSummary], orientation: str | None) -> DatasetFingerprint:
    """Spacings and shapes of the run's cases (their first images, as validation read them), in the run's
    orientation (prediction compares scans with them)."""
    return dataset_fingerprint(*_spacings_and_shapes(rows, orientation))


def _spacings_and_shapes(rows: dict[str, CaseSummary], orientation: str | None
                         ) -> tuple[list[tuple[float, ...]], list[tuple[int, ...]]]:
    """Each case's ``(sz, sy, sx)`` spacing (mm) and ``(Z, Y, X)`` shape in the run's orientation."""
    spacings, shapes = [], []
    for row in rows.values():
        spacing, shape = row.spacing, row.shape
        if orientation and row.orientation and row.orientation != orientation:
            spacing = reoriented_spacing(spacing, row.orientation, orientation)
            # axis lengths move between axes as the spacings do
            shape = tuple(int(round(v)) for v in reoriented_spacing(shape, row.orientation, orientation))
        spacings.append(spacing)
        shapes.append(shape)
    return spacings, shapes
