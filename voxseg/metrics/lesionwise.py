"""BraTS 2023 lesion-wise Dice and HD95 of one binary structure.

Image-level Dice rewards a model that segments the one large lesion well and ignores the small
ones; the BraTS 2023 lesion-wise scores weigh every lesion equally and charge every false-positive
component. Definition (BraTS 2023 organisers' evaluation code, ``rachitsaluja/BraTS-2023-Metrics``,
``brats_metrics.py::get_lesion_wise_score`` / ``get_lesion_wise_results``; ranking metric of BraTS
2023 and 2024), for one structure (WT, TC or ET):

1. Reference lesions: the reference mask is dilated ``dilation_iterations`` times with the
   18-neighbour element (``generate_binary_structure(3, 2)``), and the connected components
   (26-connectivity) of the dilated mask group the reference voxels: reference components closer
   than about two dilation radii become one lesion. The reference voxels themselves are not changed.
2. Matching: a lesion's predicted part is the union of every whole predicted connected component
   (26-connectivity) that touches the lesion's dilated region. A predicted component can match
   several lesions.
3. Per lesion: Dice between the lesion and its predicted part; HD95 between them, or the penalty
   (374 mm) when nothing matched (a false-negative lesion, Dice 0).
4. Reference lesions of volume <= ``min_lesion_volume_mm3`` (voxel count x voxel volume) are left
   out, whether matched or not. Predicted components that match no reference lesion (small ones
   included) are false positives: Dice 0, HD95 = penalty. The organisers' 2023 code does not
   size-filter them; ``min_fp_volume_mm3`` (default 0 = off, voxseg's addition) can ignore tiny ones.
5. ``lesion_dice = sum(Dice of kept lesions) / (n kept lesions + n false positives)``;
   ``lesion_hd95_mm = (sum(HD95 of kept lesions) + n_fp * penalty) / (same)``; both 1 and 0 mm when
   the denominator is 0 (nothing in either mask).

Challenge parameters (``dilation_iterations``, ``min_lesion_volume_mm3``) are in
:data:`BRATS2023_LESION_PARAMETERS`: GLI, SSA and PED (3, 50), MEN (1, 50), MET (1, 2).

Differences from the organisers' code: HD95 here is voxseg's MONAI-style HD95 (max of the two
directed 95th percentiles over surface voxels, :mod:`voxseg.metrics.surface`), whereas the
organisers use DeepMind's ``surface-distance`` ``compute_robust_hausdorff`` (surfel-area weighted),
so per-lesion HD95 differs by a fraction of a voxel; Dice, matching, counting and thresholds are the
same. The organisers' code also reads the NIfTI spacing only for volumes (BraTS is 1 mm isotropic);
here both volumes and distances use ``spacing``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from voxseg.metrics.surface import surface_distances

__all__ = ["BRATS2023_LESION_PARAMETERS", "LESION_METRIC_NAMES", "BRATS_HD95_PENALTY_MM", "lesionwise_metrics"]

#: Challenge -> ``(dilation_iterations, min_lesion_volume_mm3)`` of the BraTS 2023 evaluation code.
BRATS2023_LESION_PARAMETERS: dict[str, tuple[int, float]] = {
    "BraTS-GLI": (3, 50.0),
    "BraTS-SSA": (3, 50.0),
    "BraTS-PED": (3, 50.0),
    "BraTS-MEN": (1, 50.0),
    "BraTS-MET": (1, 2.0),
}

#: HD95 given to a missed lesion or a false-positive component (mm), as in BraTS 2023.
BRATS_HD95_PENALTY_MM: float = 374.0

#: Keys :func:`lesionwise_metrics` returns; the first two are the CSV columns of ``evaluate_folders``.
LESION_METRIC_NAMES: tuple[str, ...] = (
    "lesion_dice", "lesion_hd95_mm", "n_ref_lesions", "n_tp_lesions", "n_fn_lesions", "n_fp_lesions",
)

_CONNECTIVITY_RANK = {6: 1, 18: 2, 26: 3}


def _grow(box: tuple[slice, ...], other: tuple[slice, ...]) -> tuple[slice, ...]:
    return tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(box, other))


def _hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    d_pr, d_rp = surface_distances(pred, ref, spacing)
    return float(max(np.percentile(d_pr, 95), np.percentile(d_rp, 95)))


def _lesion_regions(ref: np.ndarray, dilation_iterations: int, components: np.ndarray) -> tuple[np.ndarray, int]:
    """Step 1: ``(regions, n)``, the connected components (labels 1..n) of the reference dilated
    ``dilation_iterations`` times by the 18-neighbour element; lesion k is the reference inside region k."""
    if dilation_iterations > 0:
        dilated = ndimage.binary_dilation(
            ref, structure=ndimage.generate_binary_structure(3, 2), iterations=int(dilation_iterations)
        )
    else:
        dilated = ref
    regions, n_lesions = ndimage.label(dilated, structure=components)
    return regions, n_lesions


def _score_lesions(ref: np.ndarray, regions: np.ndarray, n_lesions: int, pred_cc: np.ndarray,
                   spacing: Sequence[float], voxel_mm3: float, min_lesion_volume_mm3: float,
                   penalty_mm: float) -> tuple[list[float], list[float], int, set[int]]:
    """Steps 2-4: ``(Dice per scored lesion, HD95 per scored lesion, n matched scored lesions, labels of the
    predicted components that touch any lesion's region)``; lesions of at most ``min_lesion_volume_mm3``
    are not scored but still mark the components they touch as matched."""
    lesions = np.where(ref, regions, 0)
    region_boxes = ndimage.find_objects(regions)
    pred_boxes = ndimage.find_objects(pred_cc)
    matched_any: set[int] = set()
    dices: list[float] = []
    hd95s: list[float] = []
    n_tp = 0
    for k in range(1, n_lesions + 1):
        box = region_boxes[k - 1]
        # The dilated region of lesion k is exactly component k of the dilated reference.
        hits = np.unique(pred_cc[box][regions[box] == k])
        hits = hits[hits != 0]
        matched_any.update(int(h) for h in hits)
        for h in hits:
            box = _grow(box, pred_boxes[h - 1])
        lesion = lesions[box] == k
        volume_mm3 = np.count_nonzero(lesion) * voxel_mm3
        if volume_mm3 <= min_lesion_volume_mm3:
            continue
        if hits.size == 0:
            dices.append(0.0)
            hd95s.append(float(penalty_mm))
            continue
        n_tp += 1
        predicted = np.isin(pred_cc[box], hits)
        overlap = np.count_nonzero(predicted & lesion)
        dices.append(2.0 * overlap / (np.count_nonzero(predicted) + np.count_nonzero(lesion)))
        hd95s.append(_hd95(predicted, lesion, spacing))
    return dices, hd95s, n_tp, matched_any


def _false_positives(pred_cc: np.ndarray, n_pred: int, matched_any: set[int], voxel_mm3: float,
                     min_fp_volume_mm3: float) -> list[int]:
    """Labels of the predicted components that match no lesion, less those of at most ``min_fp_volume_mm3``."""
    unmatched = [h for h in range(1, n_pred + 1) if h not in matched_any]
    if min_fp_volume_mm3 > 0 and unmatched:
        sizes = np.bincount(pred_cc.ravel(), minlength=n_pred + 1)
        unmatched = [h for h in unmatched if sizes[h] * voxel_mm3 > min_fp_volume_mm3]
    return unmatched


def lesionwise_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    *,
    dilation_iterations: int = 3,
    min_lesion_volume_mm3: float = 50.0,
    connectivity: int = 26,
    penalty_mm: float = BRATS_HD95_PENALTY_MM,
    min_fp_volume_mm3: float = 0.0,
) -> dict[str, float]:
    """BraTS 2023 lesion-wise Dice and HD95 of one structure (definition in the module docstring).

    Args:
        pred: predicted boolean mask ``(Z, Y, X)``.
        ref: reference boolean mask, same shape.
        spacing: ``(sz, sy, sx)`` voxel size in mm.
        dilation_iterations: dilations (in voxels, 18-neighbour element) of the reference used to
            group nearby reference components and to match predicted components; 0 = no grouping,
            a predicted component must overlap the lesion itself. BraTS-GLI 2023: 3.
        min_lesion_volume_mm3: reference lesions of at most this volume (mm^3) are not scored.
            BraTS-GLI 2023: 50 (= 50 voxels at 1 mm).
        connectivity: 6, 18 or 26, for the connected components of both masks. BraTS: 26.
        penalty_mm: HD95 of a missed lesion or a false positive. BraTS: 374.
        min_fp_volume_mm3: unmatched predicted components of at most this volume (mm^3) are not
            counted as false positives. 0 (default) counts them all, as the BraTS 2023 code does.

    Returns:
        ``lesion_dice`` (in [0, 1]), ``lesion_hd95_mm`` (mm), and the counts ``n_ref_lesions``
        (scored reference lesions), ``n_tp_lesions`` / ``n_fn_lesions`` (scored lesions with / without
        a matched prediction) and ``n_fp_lesions`` (unmatched predicted components), as floats.

    Raises:
        ValueError: shapes differ, or a parameter is out of range.
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape or pred.ndim != 3:
        raise ValueError(f"pred {pred.shape} and ref {ref.shape} must be (Z, Y, X) masks of one shape")
    if connectivity not in _CONNECTIVITY_RANK:
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    if int(dilation_iterations) < 0:
        raise ValueError(f"dilation_iterations must be >= 0, got {dilation_iterations}")
    components = ndimage.generate_binary_structure(3, _CONNECTIVITY_RANK[connectivity])
    voxel_mm3 = float(np.prod(np.asarray(spacing, dtype=np.float64)))
    regions, n_lesions = _lesion_regions(ref, dilation_iterations, components)
    pred_cc, n_pred = ndimage.label(pred, structure=components)
    dices, hd95s, n_tp, matched_any = _score_lesions(ref, regions, n_lesions, pred_cc, spacing, voxel_mm3,
                                                     min_lesion_volume_mm3, penalty_mm)
    unmatched = _false_positives(pred_cc, n_pred, matched_any, voxel_mm3, min_fp_volume_mm3)
    n_fp = len(unmatched)
    n_scored = len(dices)
    denominator = n_scored + n_fp
    if denominator == 0:
        dice, hd95 = 1.0, 0.0
    else:
        dice = float(sum(dices)) / denominator
        hd95 = (float(sum(hd95s)) + n_fp * float(penalty_mm)) / denominator
    return {
        "lesion_dice": dice,
        "lesion_hd95_mm": hd95,
        "n_ref_lesions": float(n_scored),
        "n_tp_lesions": float(n_tp),
        "n_fn_lesions": float(n_scored - n_tp),
        "n_fp_lesions": float(n_fp),
    }
