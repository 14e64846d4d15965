"""Empty-mask policy shared by every voxseg metric.

A structure can be absent from the reference, from the prediction, or from both (a BraTS case with
no enhancing tumour; a missed lesion). The metrics then divide by zero or have no surface to measure,
so voxseg fixes their values as follows and records ``ref_empty`` / ``pred_empty`` in every row.

Both empty (a correct "nothing there"): Dice 1, IoU 1, precision 1, recall 1 (vacuous); HD95, HD and
ASSD 0 mm; surface Dice 1; volume difference 0 ml, relative volume difference 0.

Exactly one empty (a miss or a false alarm): Dice 0, IoU 0, precision 0, recall 0; HD95, HD and ASSD
equal the penalty (default: the diagonal of the volume, sqrt(sum((shape * spacing)^2)) mm, longer
than any distance inside it; set penalty_mm to override); surface Dice 0. The relative volume
difference is undefined when the reference is empty and the prediction is not: it is NaN and left
out of summaries (their n counts the finite values).

Specificity TN / (TN + FP) is always computed on the whole volume; it is 1 when TN + FP = 0.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["EMPTY_MASK_POLICY", "default_penalty_mm"]

#: The policy above as one paragraph, for JSON outputs and reports.
EMPTY_MASK_POLICY: str = " ".join(__doc__.split("\n\n", 1)[1].split())


def default_penalty_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Distance given to HD95/HD/ASSD when exactly one mask is empty.

    Args:
        shape: spatial shape in voxels, e.g. ``(Z, Y, X)``.
        spacing: voxel size in mm, same order as ``shape``.

    Returns:
        The diagonal of the volume's physical extent in mm, ``sqrt(sum((shape * spacing) ** 2))``.
    """
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))
