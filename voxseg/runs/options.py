"""What a user chooses on ``voxseg train`` (:class:`TrainOptions`); unset values are planned from the data."""
from __future__ import annotations

from dataclasses import dataclass, field

from voxseg.data.augment import AugmentConfig
from voxseg.data.preprocess import PreprocessConfig

__all__ = ["DEFAULT_MIN_ITERATIONS", "TrainOptions"]


DEFAULT_MIN_ITERATIONS = 1000
"""Training steps a time budget should hold before a planned patch stops shrinking (what it buys on hippocampus in 2
and 5 minutes: ``benchmarks/time_budget.py``, figures in the README). Budgets that already hold this many steps
(BraTS in 60 minutes) keep their patch."""


@dataclass
class TrainOptions:
    """What a user chooses on ``voxseg train``; unset values are planned from the data.

    Attributes:
        net / net_kwargs: network preset and overrides.
        spatial_dims: 3 (3-D patches) or 2 (2-D slices).
        loss / loss_kwargs: loss spec and its arguments.
        label_scheme: ``"classes"``, ``"brats"``, ``"brats2023"`` or ``"regions"`` (the regions an nnU-Net
            ``dataset.json`` declares); None: ``"regions"`` when the dataset declares regions, else ``"classes"``.
        epochs, iterations_per_epoch, time_budget_minutes, batch_size, lr, optimizer, seed, amp:
            see :class:`voxseg.plan.TrainConfig`.
        patch_size: ``[pz, py, px]`` voxels; None plans it from the median case shape.
        memory_gib: memory one training process may use (GiB); a planned patch (then batch) shrinks until a
            step fits. None: 80% of the memory free when training starts (RAM, or the GPU's).
        max_patch_voxels: cap used when planning the patch; None: 64^3 when training on a CPU, 96x96x64 on
            a GPU (see :data:`CPU_DEFAULTS`).
        min_iterations: with ``time_budget_minutes`` and a planned patch: the patch shrinks (longest axis first)
            until a training step, timed on this machine, lets the budget hold at least this many
            (:func:`voxseg.plan.timing.fit_patch_to_time_budget`). Default :data:`DEFAULT_MIN_ITERATIONS`;
            None or 0: the patch is planned for memory only.
        val_fraction: share of cases held out for validation.
        preprocess: cropping, normalisation and resampling.
        normalization: overrides ``preprocess.normalization`` when set; None: ``"ct"`` when the dataset names
            every channel CT (nnU-Net's dataset.json convention) and ``preprocess`` keeps the default
            ``"zscore"`` (set ``normalization="zscore"`` to keep z-score there), else ``preprocess.normalization``.
            With ``"ct"``, a missing ``ct_window`` and the foreground mean and std are taken from the run's cases
            (:func:`voxseg.data.preprocess.foreground_intensity_statistics`, as nnU-Net does).
        orientation: the voxel order every scan is brought to first (exact flips / permutations, undone on
            output): ``"auto"`` the one most training cases are stored in, ``"none"`` each file's own, or axis
            codes such as ``"RAS"``. An orientation set in ``preprocess`` wins over ``"auto"``.
        resample: when ``preprocess.target_spacing`` is unset and the cases' spacings differ (by over 1.25x along
            an axis): ``"auto"`` resamples every case to nnU-Net's target spacing
            (:func:`voxseg.plan.plan_target_spacing`); ``"none"`` (default) keeps each case's own grid, with a
            warning (measured on hippocampus with half the cases at 2 mm slices: held-out Dice 0.854 own grids,
            0.841 resampled to the 2 mm median).
        skip_invalid: leave out cases that fail validation (and say so) instead of refusing.
        include_cases: train only on these case ids (others are not used; e.g. the demo's test split).
        folds / fold: k-fold cross-validation by case, and which fold to train (an index or ``"all"``).
        init_from / freeze_stages / unfreeze_after_epochs: transfer learning (see ``TrainConfig``).
        train_overrides: any other ``TrainConfig`` field (schedule, optimizer_kwargs, swa_epochs, mode, ...).
        augment: data augmentation (None: random flips, ``voxseg.plan.augmentation_preset("flips")``).
    """

    net: str = "unet"
    net_kwargs: dict = field(default_factory=dict)
    spatial_dims: int = 3
    loss: str = "dice+ce"
    loss_kwargs: dict = field(default_factory=dict)
    label_scheme: str | None = None
    memory_gib: float | None = None
    epochs: int = 100
    iterations_per_epoch: int = 50
    time_budget_minutes: float | None = None
    batch_size: int = 2
    lr: float | None = None
    optimizer: str = "sgd"
    seed: int = 0
    amp: str = "auto"
    val_every: int = 1
    patch_size: list[int] | None = None
    max_patch_voxels: int | None = None
    min_iterations: int | None = DEFAULT_MIN_ITERATIONS
    val_fraction: float = 0.2
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    normalization: str | None = None
    orientation: str | None = "auto"
    resample: str = "none"
    skip_invalid: bool = False
    include_cases: list[str] | None = None
    num_threads: int | None = None
    folds: int | None = None
    fold: str = "all"
    init_from: str | None = None
    freeze_stages: int = 0
    unfreeze_after_epochs: int | None = None
    train_overrides: dict = field(default_factory=dict)
    augment: AugmentConfig | None = None
    exclude_cases: list[str] | None = None
