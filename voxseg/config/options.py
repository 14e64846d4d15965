"""What a user chooses on ``voxseg train``, typed: :class:`TrainOptions`, and its knobs as one list.

Every training knob is defined once, as a field: the network's and the training's in :class:`NetworkConfig`
and :class:`TrainConfig` (what the plan holds), the rest here (what planning needs: preprocessing, labels,
memory, data selection, cross-validation). ``voxseg.cli`` generates the options of ``voxseg train`` from
:func:`train_knobs`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from voxseg.config.knobs import Knob, knob, knob_fields
from voxseg.config.run_plan import NetworkConfig, TrainConfig, augmentation_preset
from voxseg.data.augment import AugmentConfig
from voxseg.data.preprocess import PreprocessConfig

__all__ = ["DEFAULT_MIN_ITERATIONS", "PREPROCESS_KNOBS", "TrainOptions", "train_knobs", "with_values"]

DEFAULT_MIN_ITERATIONS = 1000
"""Training steps a time budget should hold before a planned patch stops shrinking; budgets that already hold
this many steps keep their planned patch. What the shrinking buys in short budgets: ``benchmarks/time_budget.py``
and docs/benchmarks.md."""

PREPROCESS_KNOBS: dict[str, Knob] = {
    "ct_window": Knob("with ct: clip to LO,HI in HU", "data", parse="window",
                      shown="the 0.5th and 99.5th percentiles of the training cases' labelled voxels"),
    "n4": Knob("N4 bias-field correction (Tustison et al. 2010, SimpleITK) before normalisation", "data",
               shown="planned: on for MR channels with large cases in a short budget, else off"),
    "denoise": Knob("anisotropic diffusion denoising: Perona & Malik (1990) gradient or curvature flow", "data",
                    choices="denoisers"),
}
"""Knobs of :class:`voxseg.data.preprocess.PreprocessConfig` fields (whose package comes before this one, so
the metadata is kept here); the field gives the default and type."""


@dataclass
class TrainOptions:
    """What a user chooses on ``voxseg train``; unset values are planned from the data.

    Attributes:
        network: network preset, dimensions and the user's overrides (planning adds hardware defaults and
            strides for the voxel spacing).
        train: the training settings; ``lr`` and ``patch_size`` None are planned (see :class:`TrainConfig`).
        preprocess: cropping, normalisation and resampling.
        label_scheme: ``"classes"``, ``"brats"``, ``"brats2023"`` or ``"regions"`` (the regions an nnU-Net
            ``dataset.json`` declares); None: ``"regions"`` when the dataset declares regions, else ``"classes"``.
        label_names: names of the label values (overriding a dataset.json's): a list names the foreground
            values in increasing order, a dict maps values (as text) to names; None: the dataset.json's names,
            else ``label_<value>`` where a name is shown.
        memory_gib: memory one training process may use (GiB); a planned patch (then batch) shrinks until a
            step fits. None: 80% of the memory free when training starts (RAM, or the GPU's).
        max_patch_voxels: cap used when planning the patch; None: 64^3 when training on a CPU, 96x96x64 on a GPU.
        min_iterations: with ``train.time_budget_minutes`` and a planned patch: the patch shrinks (longest axis
            first) until a training step, timed on this machine, lets the budget hold at least this many
            (``voxseg.plan.timing.fit_patch_to_time_budget``). None or 0: the patch is planned for memory only.
        epochs_from_budget: the time budget was given without ``--epochs``: where planning times a step, it raises
            ``train.epochs`` so that the budget, not the default epochs, ends the run
            (:func:`voxseg.plan.fit.fit_time`).
        normalization: overrides ``preprocess.normalization`` when set; None: ``"ct"`` when the dataset names
            every channel CT (nnU-Net's dataset.json convention) and ``preprocess`` keeps the default
            ``"zscore"``, else ``preprocess.normalization``. With ``"ct"``, a missing ``ct_window`` and the
            foreground mean and std are taken from the run's cases (as nnU-Net does).
        orientation: the voxel order every scan is brought to first (exact flips / permutations, undone on
            output): ``"auto"`` the one most training cases are stored in, ``"none"`` each file's own, or axis
            codes such as ``"RAS"``. An orientation set in ``preprocess`` wins over ``"auto"``.
        spacing: when ``preprocess.target_spacing`` is unset: None is planned (``voxseg.plan.rules``:
            ``(2, 2, 2)`` or ``"none"``); ``(sz, sy, sx)`` mm resamples every case to it;
            when the cases' spacings differ (by over 1.25x along an axis), ``"auto"`` resamples them to nnU-Net's
            target spacing (``voxseg.plan.plan_target_spacing``) and ``"none"`` keeps each case's own grid, with
            a warning.
        skip_invalid: leave out cases that fail validation (and say so) instead of refusing.
        include_cases / exclude_cases: train only on these case ids / leave these out.
        folds / fold: k-fold cross-validation by case, and which fold to train (an index or ``"all"``).
        augment / augment_args: augmentation preset (``voxseg.config.AUGMENTATION_PRESETS``; None: planned,
            ``"flips"`` where nothing plans it) and per-transform probabilities that replace the preset's;
            :meth:`augmentation` builds it.
        planner_notes: what the planner's rules chose and why (``voxseg.plan.rules``), one line each; saved in
            ``plan.json``.
        recipe: the recipe the options came from (``voxseg train --recipe``): ``{"name": ..., "values": {flag: value
            taken from it}, "overridden": [flags given on the command line instead]}``; empty: none. Saved in
            ``plan.json``.
    """

    network: NetworkConfig = field(default_factory=NetworkConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    label_scheme: str | None = knob(None, choices="label_schemes", group="data",
                                    shown="regions if dataset.json declares them, else classes",
                                    help="softmax classes, sigmoid BraTS regions (WT/TC/ET), or the regions of an "
                                         "nnU-Net dataset.json")
    label_names: list[str] | dict[str, str] | None = knob(
        None, parse="label_names", group="data", shown="dataset.json's names, else label_<value>",
        help="names of the label values, used in the plan, logs, metrics and reports: CSF,GM,WM (the foreground "
             'values in increasing order), or a file: JSON {"1": "CSF", ...} or one name per line')
    memory_gib: float | None = knob(None, flag="--memory", range="(0, inf)", group="budget and hardware",
                                    shown="80% of the memory free",
                                    help="GiB one training process may use; a planned patch (then batch) shrinks to fit")
    max_patch_voxels: int | None = None
    epochs_from_budget: bool = False
    min_iterations: int | None = knob(DEFAULT_MIN_ITERATIONS, range="[0, inf)", group="budget and hardware",
                                      help="with --time-budget and a planned patch: shrink the patch until the "
                                           "budget holds this many steps, timed on this machine (0: plan the patch "
                                           "for memory only)")
    normalization: str | None = knob(None, choices="normalizations", group="data",
                                     shown="ct when dataset.json names every channel CT, as nnU-Net does, else zscore",
                                     help="intensity normalisation")
    orientation: str | None = knob("auto", parse="orientation", group="data",
                                   help="voxel order every scan is flipped / permuted to first, exactly, and back on "
                                        "output: auto (the one most training cases are stored in), none (each "
                                        "file's own), or axis codes such as RAS or LPS")
    spacing: str | tuple[float, float, float] | None = knob(
        None, parse="spacing", group="data",
        shown="planned: 2 mm for large, fine, isotropic-ish scans in a short budget (docs/training.md), else none",
        help="resample to this spacing in mm, z,y,x (e.g. 1,1,1); auto: to nnU-Net's target (the cases' median) when "
             "their spacings differ; none: keep each case's own grid (said when they differ)")
    skip_invalid: bool = knob(False, group="data", help="leave out cases that fail validation, and say which")
    include_cases: list[str] | None = None
    exclude_cases: list[str] | None = knob(None, parse="cases", group="data",
                                           help="leave out these cases: ids separated by commas, or a "
                                                "flagged_cases.json")
    folds: int | None = knob(None, range="[2, inf)", group="data", help="k-fold cross-validation by case (RUN/fold_N/)")
    fold: str = knob("all", group="data", help="which fold to train: an index or 'all'")
    augment: str | None = knob(None, choices="augmentations", group="augmentation",
                               shown="planned: default for large cases in a short budget under 100 patches in all, else flips",
                               help="augmentation preset: none, flips (random flips of every axis) or default (the "
                                    "full chain of Isensee et al. 2021)")
    augment_args: dict[str, Any] = knob({}, parse="key_values", group="augmentation",
                                        help="probabilities per transform, e.g. elastic=0.3,gamma=0")
    planner_notes: list[str] = field(default_factory=list)
    recipe: dict[str, Any] = field(default_factory=dict)

    def augmentation(self) -> AugmentConfig:
        """The augmentation: the preset with ``augment_args``' probabilities.

        Raises:
            ValueError: an unknown preset or transform, or a probability outside [0, 1].
        """
        return augmentation_preset(self.augment or "flips").replace(**self.augment_args)


_NESTED = {"network": NetworkConfig, "train": TrainConfig}


def train_knobs() -> list[tuple[str, dataclasses.Field, Knob]]:
    """Every knob of :class:`TrainOptions` as ``(path, field, knob)``, ``path`` naming where the value goes
    (``"train.lr"``, ``"network.kwargs"``, ``"preprocess.n4"``, ``"folds"``); see :func:`with_values`."""
    out = [(f.name, f, k) for f, k in knob_fields(TrainOptions)]
    out += [(f"preprocess.{f.name}", f, PREPROCESS_KNOBS[f.name]) for f in dataclasses.fields(PreprocessConfig)
            if f.name in PREPROCESS_KNOBS]
    return out + [(f"{name}.{f.name}", f, k) for name, cls in _NESTED.items() for f, k in knob_fields(cls)]


def with_values(options: TrainOptions, values: dict[str, Any]) -> TrainOptions:
    """``options`` with ``values`` set, keyed by the paths of :func:`train_knobs` (nested configs copied)."""
    nested: dict[str, dict[str, Any]] = {}
    top = {}
    for path, value in values.items():
        head, _, name = path.partition(".")
        if name:
            nested.setdefault(head, {})[name] = value
        else:
            top[head] = value
    for head, changes in nested.items():
        top[head] = dataclasses.replace(getattr(options, head), **changes)
    return dataclasses.replace(options, **top)
