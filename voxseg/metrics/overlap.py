"""Voxel-overlap and volume metrics of one binary structure (see :mod:`voxseg.metrics.policy`).

Volume difference follows Archit & Adilina (2022) (IBSR18 report, eq. 9, "average volumetric distance"):
``rel_vol_diff = |V_ref - V_pred| / V_ref``, a fraction (not %) of the reference volume. The signed
``vol_diff_ml = V_pred - V_ref`` (positive = over-segmentation) and its absolute value are given in ml.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["confusion_counts", "overlap_metrics"]


def confusion_counts(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int, int]:
    """Count true/false positives/negatives.

    Args:
        pred: boolean mask, any shape.
        ref: boolean mask, same shape as ``pred``.

    Returns:
        ``(tp, fp, fn, tn)`` in voxels.
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"pred shape {pred.shape} != ref shape {ref.shape}")
    n_pred = int(np.count_nonzero(pred))
    n_ref = int(np.count_nonzero(ref))
    tp = int(np.count_nonzero(pred & ref))
    fp = n_pred - tp
    fn = n_ref - tp
    tn = pred.size - tp - fp - fn
    return tp, fp, fn, tn


def _ratio(num: float, den: float, if_zero: float) -> float:
    return float(num) / float(den) if den else float(if_zero)


def overlap_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Dice, IoU, precision, recall, specificity and volumes of one structure.

    Args:
        pred: predicted boolean mask ``(Z, Y, X)`` (any number of axes works).
        ref: reference boolean mask, same shape.
        spacing: voxel size in mm, one value per axis, e.g. ``(sz, sy, sx)``.

    Returns:
        ``dice``, ``iou``, ``precision``, ``recall`` (= sensitivity), ``specificity`` (fractions in
        [0, 1]); ``vol_ref_ml``, ``vol_pred_ml``, ``vol_diff_ml`` (pred - ref), ``abs_vol_diff_ml``
        (ml); ``rel_vol_diff`` (|ref - pred| / ref, Archit & Adilina (2022)). Empty masks follow
        :mod:`voxseg.metrics.policy`.
    """
    tp, fp, fn, tn = confusion_counts(pred, ref)
    if len(spacing) != np.ndim(pred):
        raise ValueError(f"spacing {tuple(float(s) for s in spacing)} has {len(spacing)} values for a {np.ndim(pred)}-D mask")
    n_pred, n_ref = tp + fp, tp + fn
    both_empty = n_pred == 0 and n_ref == 0
    voxel_ml = float(np.prod(np.asarray(spacing, dtype=np.float64))) / 1000.0
    vol_ref, vol_pred = n_ref * voxel_ml, n_pred * voxel_ml
    if n_ref:
        rel = abs(n_ref - n_pred) / n_ref
    else:
        rel = 0.0 if n_pred == 0 else float("nan")
    vacuous = 1.0 if both_empty else 0.0
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, vacuous),
        "iou": _ratio(tp, tp + fp + fn, vacuous),
        "precision": _ratio(tp, n_pred, vacuous),
        "recall": _ratio(tp, n_ref, vacuous),
        "specificity": _ratio(tn, tn + fp, 1.0),
        "vol_ref_ml": vol_ref,
        "vol_pred_ml": vol_pred,
        "vol_diff_ml": (n_pred - n_ref) * voxel_ml,
        "abs_vol_diff_ml": abs(n_pred - n_ref) * voxel_ml,
        "rel_vol_diff": float(rel),
    }
