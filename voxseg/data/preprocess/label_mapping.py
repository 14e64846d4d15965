"""The bijection between a dataset's label values and the network's consecutive classes."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

__all__ = ["LabelMapping"]


class LabelMapping:
    """Bijection between a dataset's original label values and consecutive class indices ``0..K-1``.

    Networks need consecutive classes; BraTS labels are ``0, 1, 2, 4``. ``LabelMapping([0, 1, 2, 4])``
    maps ``0->0, 1->1, 2->2, 4->3`` and back. Background ``0`` is always included (added if missing).

    Args:
        values: original label values (any order, duplicates ignored).
    """

    def __init__(self, values: Iterable[int]):
        vals = sorted({int(v) for v in values} | {0})
        if len(vals) > 256:
            raise ValueError(f"at most 256 classes fit in uint8, got {len(vals)}")
        self.values: list[int] = vals
        self._values_arr = np.asarray(vals, dtype=np.int64)

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelMapping) and self.values == other.values

    def __repr__(self) -> str:
        return f"LabelMapping({self.values})"

    def to_consecutive(self, label: np.ndarray) -> np.ndarray:
        """Original values -> class indices.

        Args:
            label: integer array of any shape (float arrays with integer values are accepted).

        Returns:
            ``uint8`` array of the same shape with values in ``0..num_classes-1``.

        Raises:
            ValueError: the label holds values not in :attr:`values` (listed in the message).
        """
        arr = np.asarray(label)
        flat = _as_int64(arr)
        idx = np.searchsorted(self._values_arr, flat)
        idx_c = np.minimum(idx, len(self.values) - 1)
        bad = self._values_arr[idx_c] != flat
        if bad.any():
            unknown = np.unique(flat[bad]).tolist()
            raise ValueError(f"label values {unknown} are not in the label mapping {self.values}")
        return idx_c.astype(np.uint8)

    def to_original(self, label: np.ndarray) -> np.ndarray:
        """Class indices -> original values (exact inverse of :meth:`to_consecutive`).

        Returns:
            Array of the same shape; ``uint8`` when all original values fit, otherwise ``int32``.

        Raises:
            ValueError: indices outside ``0..num_classes-1`` (listed in the message).
        """
        flat = _as_int64(np.asarray(label))
        bad = (flat < 0) | (flat >= self.num_classes)
        if bad.any():
            unknown = np.unique(flat[bad]).tolist()
            raise ValueError(f"class indices {unknown} are outside 0..{self.num_classes - 1} of {self.values}")
        fits_u8 = self.values[0] >= 0 and self.values[-1] <= 255
        return self._values_arr[flat].astype(np.uint8 if fits_u8 else np.int32)

    @classmethod
    def from_arrays(cls, labels: np.ndarray | Iterable[np.ndarray]) -> "LabelMapping":
        """Mapping of every value present in one label array or an iterable of them."""
        if isinstance(labels, np.ndarray):
            labels = [labels]
        values: set[int] = set()
        for lab in labels:
            values.update(np.unique(_as_int64(np.asarray(lab))).tolist())
        return cls(values)

    def to_dict(self) -> dict[str, Any]:
        """``{"values": [...]}``."""
        return {"values": list(self.values)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LabelMapping":
        """Inverse of :meth:`to_dict`."""
        return cls(data["values"])


def _as_int64(arr: np.ndarray) -> np.ndarray:
    """Integer view of a label array; float labels must hold integer values (some MSD labels are float32)."""
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64, copy=False)
    as_int = np.rint(arr).astype(np.int64)
    if not np.array_equal(as_int, arr):
        raise ValueError("label array holds non-integer values")
    return as_int
