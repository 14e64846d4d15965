"""All metrics of one case: per structure (a set of label values), from label maps.

A structure is a class (``{"anterior": [1]}``) or a region made of several labels (BraTS
``{"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}``). Empty masks follow :mod:`voxseg.metrics.policy`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from voxseg.metrics.overlap import overlap_metrics
from voxseg.metrics.surface import surface_metrics

__all__ = ["METRIC_NAMES", "binary_metrics", "case_metrics", "confusion_matrix"]

#: Numeric metrics of a row, in CSV column order (``ref_empty``/``pred_empty`` flags follow them).
METRIC_NAMES: tuple[str, ...] = (
    "dice", "iou", "precision", "recall", "specificity",
    "hd95_mm", "hd_mm", "assd_mm", "surface_dice",
    "vol_ref_ml", "vol_pred_ml", "vol_diff_ml", "abs_vol_diff_ml", "rel_vol_diff",
)


def binary_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    *,
    tolerance_mm: float = 1.0,
    penalty_mm: float | None = None,
) -> dict[str, float]:
    """Every metric of one structure given as two boolean masks.

    Args:
        pred: predicted boolean mask ``(Z, Y, X)``.
        ref: reference boolean mask, same shape.
        spacing: ``(sz, sy, sx)`` voxel size in mm.
        tolerance_mm: surface Dice tolerance in mm.
        penalty_mm: HD95/HD/ASSD when exactly one mask is empty; ``None`` = volume diagonal in mm.

    Returns:
        The keys of :data:`METRIC_NAMES` (floats) plus ``ref_empty`` and ``pred_empty`` (bools).
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    row: dict[str, float] = {}
    row.update(overlap_metrics(pred, ref, spacing))
    row.update(surface_metrics(pred, ref, spacing, tolerance_mm=tolerance_mm, penalty_mm=penalty_mm))
    out: dict[str, float] = {name: row[name] for name in METRIC_NAMES}
    out["ref_empty"] = not ref.any()
    out["pred_empty"] = not pred.any()
    return out


def case_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    structures: Mapping[str, Sequence[int]],
    penalty_mm: float | None = None,
    *,
    tolerance_mm: float = 1.0,
) -> dict[str, dict[str, float]]:
    """Metrics of every structure of one case.

    Args:
        pred: predicted label map ``(Z, Y, X)``, integer label values.
        ref: reference label map, same shape.
        spacing: ``(sz, sy, sx)`` voxel size in mm.
        structures: name -> label values making the structure, e.g. ``{"WT": [1, 2, 4]}``.
        penalty_mm: HD95/HD/ASSD when exactly one mask is empty; ``None`` = volume diagonal in mm.
        tolerance_mm: surface Dice tolerance in mm.

    Returns:
        ``{structure: {metric: value}}`` with the keys of :func:`binary_metrics`.

    Raises:
        ValueError: shapes differ, or a structure has no label values.
    """
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"pred shape {pred.shape} != ref shape {ref.shape}")
    if not structures:
        raise ValueError("structures is empty: give at least one {name: [label values]}")
    result = {}
    for name, labels in structures.items():
        labels = [int(v) for v in labels]
        if not labels:
            raise ValueError(f"structure {name!r} has no label values")
        result[name] = binary_metrics(
            np.isin(pred, labels), np.isin(ref, labels), spacing, tolerance_mm=tolerance_mm, penalty_mm=penalty_mm
        )
    return result


def confusion_matrix(pred: np.ndarray, ref: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Voxel counts of every (reference label, predicted label) pair.

    Args:
        pred: predicted label map ``(Z, Y, X)``, integer label values.
        ref: reference label map, same shape.
        labels: the L label values, in the order of the matrix rows and columns (e.g. ``[0, 1, 2, 4]``).

    Returns:
        ``(L, L)`` int64: entry ``[i, j]`` counts the voxels with reference ``labels[i]`` and
        prediction ``labels[j]`` (rows = reference, columns = prediction, as scikit-learn). Voxels
        whose reference or predicted value is not in ``labels`` are not counted, so the sum is the
        number of voxels only when ``labels`` covers every value.

    Raises:
        ValueError: shapes differ, or ``labels`` is empty or has duplicates.
    """
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"pred shape {pred.shape} != ref shape {ref.shape}")
    values = np.asarray([int(v) for v in labels], dtype=np.int64)
    if values.size == 0 or np.unique(values).size != values.size:
        raise ValueError(f"labels must be distinct label values, got {list(labels)}")
    order = np.argsort(values)
    sorted_values = values[order]
    n = values.size

    def index(arr: np.ndarray) -> np.ndarray:
        flat = arr.reshape(-1).astype(np.int64, copy=False)
        pos = np.minimum(np.searchsorted(sorted_values, flat), n - 1)
        idx = order[pos]
        idx[sorted_values[pos] != flat] = -1  # not a listed label
        return idx

    r, c = index(ref), index(pred)
    keep = (r >= 0) & (c >= 0)
    counts = np.bincount(r[keep] * n + c[keep], minlength=n * n)
    return counts.reshape(n, n).astype(np.int64, copy=False)
