"""Validation during training: Dice of the network's predictions on held-out cases, in preprocessed space.

Training may not import :mod:`voxseg.metrics` (a later stage); :func:`mask_dice` follows the evaluation's
empty-mask policy, and ``voxseg.metrics.overlap_metrics`` is its test oracle.

Under a time budget planning may choose a fixed subset (``plan.train.val_cases``, ``val_windows``; see
:mod:`voxseg.plan.validation_budget`): :func:`validation_cases` and :func:`validation_windows` draw it, seeded
by ``plan.train.seed``, the same at every validation, so Dice across epochs is comparable.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from voxseg.config import RunPlan
from voxseg.infer.backends import ValidationBackend
from voxseg.infer.sliding_window import predict_volume, probabilities_to_labels
from voxseg.infer.windows import window_grid
from voxseg.train.batches import PreparedCase

__all__ = ["FOREGROUND_WINDOWS", "VALIDATION_SHARE", "ValidationSchedule", "mask_dice", "validation_cases",
           "validation_dice", "validation_windows", "window_starts_of"]

VALIDATION_SHARE = 0.1
"""The part of a time budget validation may use: planning leaves it out of the steps a budget buys, and
:class:`ValidationSchedule` validates less often when validating takes longer."""


FOREGROUND_WINDOWS = 0.75
"""The part of a window sample drawn from windows holding foreground (the rest: background windows)."""


def window_starts_of(spatial: tuple[int, ...], plan: RunPlan) -> list[tuple[int, ...]]:
    """Every sliding window's start ``(z, y, x)`` (voxels) for a preprocessed case of ``spatial`` ``(Z, Y, X)``
    shape, at the plan's patch and overlap, as :func:`voxseg.infer.sliding_window.predict_volume` predicts
    (a 2-D plan: one window per slice position)."""
    grid = window_grid(spatial, plan.train.patch_size, plan.inference.overlap)
    return list(itertools.product(*grid))


def validation_cases(cases: list[PreparedCase], plan: RunPlan) -> list[PreparedCase]:
    """The validation cases scored: all of them, or the seeded ``plan.train.val_cases`` of them (in
    ``case_id`` order), the same at every call."""
    count = plan.train.val_cases
    if count is None or count >= len(cases):
        return list(cases)
    ordered = sorted(cases, key=lambda c: c.case_id)
    chosen = np.random.default_rng(plan.train.seed).permutation(len(ordered))[:max(count, 1)]
    return [ordered[i] for i in sorted(chosen)]


def validation_windows(case: PreparedCase, plan: RunPlan) -> list[tuple[int, ...]] | None:
    """The fixed sample of ``plan.train.val_windows`` window starts scored on ``case`` (None: every window, the
    whole volume): :data:`FOREGROUND_WINDOWS` of them (or all there are) among the windows holding foreground,
    the rest among the others, drawn with ``plan.train.seed`` and the case id, so the same at every call."""
    count = plan.train.val_windows
    starts = window_starts_of(tuple(case.image.shape[1:]), plan)
    if count is None or count >= len(starts):
        return None
    patch = plan.train.patch_size
    has_fg = [bool(np.any(case.label[tuple(slice(a, a + p) for a, p in zip(start, patch))])) for start in starts]
    fg = [i for i, f in enumerate(has_fg) if f]
    bg = [i for i, f in enumerate(has_fg) if not f]
    rng = np.random.default_rng([plan.train.seed, *case.case_id.encode()])
    n_fg = min(len(fg), max(count - len(bg), math.ceil(FOREGROUND_WINDOWS * count)))
    picked = list(rng.choice(fg, n_fg, replace=False)) if n_fg else []
    picked += list(rng.choice(bg, count - n_fg, replace=False)) if count > n_fg else []
    return [starts[i] for i in sorted(picked)]


def _covered(shape: tuple[int, ...], windows: list[tuple[int, ...]], patch: list[int]) -> np.ndarray:
    """Boolean ``shape`` mask of the voxels the windows cover."""
    mask = np.zeros(shape, bool)
    for start in windows:
        mask[tuple(slice(a, a + p) for a, p in zip(start, patch))] = True
    return mask


def mask_dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean masks of the same shape, in [0, 1]; both empty: 1, one empty: 0
    (``voxseg.metrics.policy``)."""
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(ref))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(pred & ref)) / total


def _structures(plan: RunPlan) -> list[tuple[str, list[int]]]:
    """``(name, consecutive classes)`` per scored structure: each foreground class, or each region."""
    scheme = plan.scheme
    index = {v: k for k, v in enumerate(plan.label_values)}  # original value -> consecutive class
    if scheme.is_region_based:
        return [(name, [index[v] for v in values if v in index]) for name, values in scheme.regions.items()]
    return [(plan.label_names.get(str(v), f"label_{v}"), [k]) for k, v in enumerate(plan.label_values) if k]


def validation_dice(model: torch.nn.Module, plan: RunPlan, cases: list[PreparedCase],
                    device: torch.device, windows: list[list[tuple[int, ...]] | None] | None = None,
                    backend: ValidationBackend | None = None) -> dict[str, float]:
    """Mean Dice per foreground class, or per region for region schemes (what the network predicts, e.g.
    BraTS WT/TC/ET, as nnU-Net selects region models), over ``cases`` (labelled, preprocessed space).

    ``windows``: per case, the window starts to predict (:func:`validation_windows`; None: the whole volume);
    Dice is then over the voxels those windows cover. ``backend``: what runs the network
    (:class:`~voxseg.infer.backends.ValidationBackend`, kept across validations; None: PyTorch).

    The model is switched to eval mode for the predictions and back to training mode after.

    Returns:
        ``{structure name: mean Dice}``.
    """
    model.eval()
    windows = windows or [None] * len(cases)
    runner = _inference_backend(model, plan, cases, device, windows, backend or ValidationBackend("torch")) \
        if cases else None
    structures = _structures(plan)
    per_structure: dict[str, list[float]] = {}
    for case, starts in zip(cases, windows):
        pred = probabilities_to_labels(predict_volume(model, plan, case.image, device, backend=runner,
                                                      windows=starts), plan)
        label = np.asarray(case.label)
        if starts is not None:
            covered = _covered(pred.shape, starts, plan.train.patch_size)
            pred, label = pred[covered], label[covered]
        for name, classes in structures:
            per_structure.setdefault(name, []).append(mask_dice(np.isin(pred, classes), np.isin(label, classes)))
    model.train()
    return {name: float(np.mean(v)) for name, v in per_structure.items()}


def _inference_backend(model, plan: RunPlan, cases: list[PreparedCase], device: torch.device,
                       windows: list, backend: ValidationBackend):
    """The backend of this validation: what ``backend`` chooses for its batches of windows."""
    size = plan.inference.batch_size
    batches = sum(math.ceil(len(starts if starts is not None else window_starts_of(tuple(c.image.shape[1:]), plan))
                            / size) for c, starts in zip(cases, windows))
    patch = tuple(plan.train.patch_size)
    window = patch[1:] if plan.network.spatial_dims == 2 else patch
    shape = (size, plan.input_channels, *window)
    return backend.for_validation(model, plan.train.amp, shape, torch.device(device), batches)


class ValidationSchedule:
    """When to validate, so that under a time budget validation keeps to its share and the final one ends
    within the budget.

    Without a budget, every ``val_every``-th epoch and the last. With one, a due validation is also skipped
    when it would take validation past ``share`` of the time trained so far (each one's duration is measured,
    so whole-volume validation of large cases runs less often), and :meth:`reserve_s` keeps the last
    validation's duration at the end of the budget, so training stops early enough for the final validation
    to end within it. Until one is measured, planning's estimate (``estimate_s``) stands for the last
    duration: the first validation waits until it fits the share, and the final one is reserved from the start.

    Args:
        val_every: validate every N epochs at most.
        budget_s: the time budget in seconds (``inf``: none).
        share: the part of the time validation may use (:data:`VALIDATION_SHARE`).
        estimate_s: seconds a validation is expected to take (``plan.train.val_seconds``; None: unknown).
    """

    def __init__(self, val_every: int, budget_s: float, share: float = VALIDATION_SHARE,
                 estimate_s: float | None = None):
        self.val_every, self.budget_s, self.share = val_every, budget_s, share
        self.spent_s, self.last_s = 0.0, estimate_s

    def due(self, epoch: int, elapsed_s: float, is_last: bool) -> bool:
        """Whether to validate after ``epoch`` (1-based, just finished) at ``elapsed_s`` seconds of the run."""
        if is_last:
            return True
        if epoch % self.val_every:
            return False
        if not np.isfinite(self.budget_s) or self.last_s is None:
            return True
        return self.spent_s + self.last_s <= self.share * (elapsed_s + self.last_s)

    def record(self, seconds: float) -> None:
        """A validation took ``seconds``."""
        self.spent_s += seconds
        self.last_s = seconds

    def reserve_s(self) -> float:
        """Seconds to keep at the end of the budget for the final validation: the last one's duration (before
        the first: the estimate, else 0; 0 without a budget)."""
        return (self.last_s or 0.0) if np.isfinite(self.budget_s) else 0.0
