"""Validation during training: Dice of the network's predictions on held-out cases, in preprocessed space.

Training may not import :mod:`voxseg.metrics` (a later stage); :func:`mask_dice` follows the evaluation's
empty-mask policy, and ``voxseg.metrics.overlap_metrics`` is its test oracle.
"""
from __future__ import annotations

import numpy as np
import torch

from voxseg.config import RunPlan
from voxseg.infer.sliding_window import predict_volume, probabilities_to_labels
from voxseg.train.batches import PreparedCase

__all__ = ["VALIDATION_SHARE", "ValidationSchedule", "mask_dice", "validation_dice"]

VALIDATION_SHARE = 0.1
"""The part of a time budget validation may use: planning leaves it out of the steps a budget buys, and
:class:`ValidationSchedule` validates less often when validating takes longer."""


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
                    device: torch.device) -> dict[str, float]:
    """Mean Dice per foreground class, or per region for region schemes (what the network predicts, e.g.
    BraTS WT/TC/ET, as nnU-Net selects region models), over ``cases`` (labelled, preprocessed space).

    The model is switched to eval mode for the predictions and back to training mode after.

    Returns:
        ``{structure name: mean Dice}``.
    """
    model.eval()
    structures = _structures(plan)
    per_structure: dict[str, list[float]] = {}
    for case in cases:
        pred = probabilities_to_labels(predict_volume(model, plan, case.image, device), plan)
        for name, classes in structures:
            per_structure.setdefault(name, []).append(mask_dice(np.isin(pred, classes), np.isin(case.label, classes)))
    model.train()
    return {name: float(np.mean(v)) for name, v in per_structure.items()}


class ValidationSchedule:
    """When to validate, so that under a time budget validation keeps to its share and the final one ends
    within the budget.

    Without a budget, every ``val_every``-th epoch and the last. With one, a due validation is also skipped
    when it would take validation past ``share`` of the time trained so far (each one's duration is measured,
    so whole-volume validation of large cases runs less often), and :meth:`reserve_s` keeps the last
    validation's duration at the end of the budget, so training stops early enough for the final validation
    to end within it.

    Args:
        val_every: validate every N epochs at most.
        budget_s: the time budget in seconds (``inf``: none).
        share: the part of the time validation may use (:data:`VALIDATION_SHARE`).
    """

    def __init__(self, val_every: int, budget_s: float, share: float = VALIDATION_SHARE):
        self.val_every, self.budget_s, self.share = val_every, budget_s, share
        self.spent_s, self.last_s = 0.0, None

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
        """Seconds to keep at the end of the budget for the final validation: the last one's duration (0 before
        the first, or without a budget)."""
        return (self.last_s or 0.0) if np.isfinite(self.budget_s) else 0.0
