"""Cropping to the region that is nonzero in any channel (skull-stripped MRI)."""
from __future__ import annotations

import numpy as np

__all__ = ["BBox", "bbox_slices", "nonzero_bbox", "nonzero_mask"]

#: ``[(start, stop)] * 3`` half-open voxel ranges along (Z, Y, X).
BBox = list[tuple[int, int]]


def nonzero_bbox(image: np.ndarray) -> BBox:
    """Bounding box of the voxels nonzero in any channel.

    Args:
        image: ``(C, Z, Y, X)`` or ``(Z, Y, X)``.

    Returns:
        ``[(z0, z1), (y0, y1), (x0, x1)]`` half-open voxel ranges; the whole volume when all voxels are 0.
    """
    mask = nonzero_mask(image)
    shape = mask.shape
    bbox: BBox = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return [(0, s) for s in shape]
        bbox.append((int(hits[0]), int(hits[-1]) + 1))
    return bbox


def nonzero_mask(image: np.ndarray) -> np.ndarray:
    return (image != 0).any(axis=0) if image.ndim == 4 else image != 0


def bbox_slices(bbox: BBox) -> tuple[slice, slice, slice]:
    return tuple(slice(a, b) for a, b in bbox)  # type: ignore[return-value]
