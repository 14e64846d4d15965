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

__all__ = ["mask_dice", "validation_dice"]


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
