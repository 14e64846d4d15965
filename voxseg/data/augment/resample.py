"""Resampling of an augmented patch: the composed spatial draw applied once, straight from the whole volume.

Coordinates are voxel indices; an output voxel ``o`` (an offset from the patch centre) reads the input at
``centre + M @ o + d(o)``. When ``M`` is a signed permutation (flips, rot90) and there is no displacement
the patch is cut by slicing, exactly; otherwise the image is interpolated linearly and the label by
nearest neighbour. Outside the volume both read 0.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from voxseg.data.arrays import tensor_view

__all__ = ["crop_window", "linear_image", "nearest_label", "resample_patch", "sampling_coordinates"]


def _signed_permutation(m: np.ndarray) -> np.ndarray | None:
    """``perm`` with ``m[perm[b], b] = +-1`` and zeros elsewhere, or ``None``."""
    r = np.rint(m)
    if np.abs(m - r).max() > 1e-9 or not (np.abs(r).sum(axis=0) == 1).all() or not (np.abs(r).sum(axis=1) == 1).all():
        return None
    return np.abs(r).argmax(axis=0)


def crop_window(array: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Copy ``array[..., start:start+size]`` over the last ``len(size)`` axes; outside is 0.

    Args:
        array: ``(..., *spatial)``; the leading axes (channels) are kept.
        start: first voxel per spatial axis (may be negative or past the end).
        size: window size in voxels per spatial axis.

    Returns:
        ``(..., *size)`` new array of ``array``'s dtype.
    """
    d = len(size)
    spatial = array.shape[-d:]
    src, dst = [], []
    for s0, n, dim in zip(start, size, spatial):
        a, b = max(s0, 0), min(s0 + n, dim)
        src.append(slice(a, max(a, b)))
        dst.append(slice(a - s0, a - s0 + max(0, b - a)))
    src_view = array[(Ellipsis, *src)]
    if all(s.stop - s.start == n for s, n in zip(dst, size)):
        return src_view.copy()  # fully inside: one copy, no zero fill
    out = np.zeros(array.shape[:-d] + tuple(size), dtype=array.dtype)
    out[(Ellipsis, *dst)] = src_view
    return out


def _slice_path(image, label, centre, out_shape, perm, matrix):
    """Exact resampling for a signed-permutation matrix: window, flip, transpose (no interpolation)."""
    d = len(out_shape)
    size_in, start, flips = [0] * d, [0] * d, []
    for b in range(d):
        a = int(perm[b])
        s = matrix[a, b]
        half = (out_shape[b] - 1) / 2.0
        # Snap to the nearest voxel: at most half a voxel, less than the jitter of patch placement.
        first = int(math.floor(centre[a] - s * half + 0.5))
        size_in[a] = out_shape[b]
        start[a] = first if s > 0 else first - out_shape[b] + 1
        if s < 0:
            flips.append(a)
    order = [int(perm[b]) for b in range(d)]

    inside = all(0 <= s0 and s0 + n <= dim for s0, n, dim in zip(start, size_in, image.shape[1:]))

    def cut(x, lead):
        if inside:  # reversed slices of the volume itself: a single copy below
            sl = [slice(s0 + n - 1, s0 - 1 if s0 > 0 else None, -1) if a in flips else slice(s0, s0 + n)
                  for a, (s0, n) in enumerate(zip(start, size_in))]
            w = x[(Ellipsis, *sl)]
        else:
            w = crop_window(x, start, size_in)
            if flips:
                w = np.flip(w, axis=[lead + a for a in flips])
        if order != list(range(d)):
            w = np.transpose(w, list(range(lead)) + [lead + a for a in order])
        return np.array(w, order="C")  # always a new array: later steps work in place

    return cut(image, 1), (None if label is None else cut(label, 0))


def sampling_coordinates(centre: Sequence[float], out_shape: Sequence[int], matrix: np.ndarray,
                         displacement: np.ndarray | None) -> np.ndarray:
    """Input voxel coordinates ``(d, *out_shape)`` float32 for each output voxel.

    Output voxel ``o`` (offset from the patch centre ``(n - 1) / 2`` per axis) reads the input at
    ``centre + matrix @ o + displacement[:, o]``; ``displacement`` ``(d, *out_shape)`` may be ``None``.
    """
    d = len(out_shape)
    coords = np.empty((d,) + tuple(out_shape), dtype=np.float32)
    axes = [np.arange(n, dtype=np.float32) - np.float32((n - 1) / 2.0) for n in out_shape]
    for a in range(d):
        acc = np.full(out_shape, np.float32(centre[a]), dtype=np.float32)
        for b in range(d):
            if matrix[a, b] != 0:
                shape = [1] * d
                shape[b] = out_shape[b]
                acc += (np.float32(matrix[a, b]) * axes[b]).reshape(shape)
        coords[a] = acc
    if displacement is not None:
        coords += displacement
    return coords


def nearest_label(label: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Nearest-neighbour lookup of ``label`` ``(*spatial)`` at ``coords`` ``(d, *out)``; 0 outside the volume.

    Returns:
        ``(*out)`` array of ``label``'s dtype.
    """
    idx = np.rint(coords).astype(np.intp)
    valid = np.ones(coords.shape[1:], dtype=bool)
    flat = np.zeros(coords.shape[1:], dtype=np.intp)
    for a, n in enumerate(label.shape):
        i = idx[a]
        valid &= (i >= 0) & (i < n)
        np.clip(i, 0, n - 1, out=i)
        flat *= n
        flat += i
    out = np.take(label.reshape(-1), flat)
    out[~valid] = 0
    return out


def linear_image(image: np.ndarray, coords: np.ndarray, backend: str) -> np.ndarray:
    """Linear interpolation of all channels of ``image`` ``(C, *spatial)`` at ``coords`` ``(d, *out)``; 0 outside.

    Args:
        backend: ``"torch"`` (``grid_sample``, one pass for all channels) or ``"scipy"``
            (``map_coordinates`` per channel).

    Returns:
        ``(C, *out)`` float32.
    """
    if backend == "scipy":
        out = np.empty((image.shape[0],) + coords.shape[1:], dtype=np.float32)
        for c in range(image.shape[0]):
            ndimage.map_coordinates(image[c], coords, output=out[c], order=1, mode="constant", cval=0.0,
                                    prefilter=False)
        return out
    # torch: one pass shares the interpolation weights across channels.
    d = coords.shape[0]
    spatial = image.shape[1:]
    grid = np.empty(coords.shape[1:] + (d,), dtype=np.float32)
    for a in range(d):
        # grid_sample wants (x, y[, z]) order in [-1, 1] (align_corners=False: voxel centres at (2i+1)/n-1).
        grid[..., d - 1 - a] = coords[a] * np.float32(2.0 / spatial[a]) + np.float32(1.0 / spatial[a] - 1.0)
    src = np.ascontiguousarray(image, dtype=np.float32)
    out = F.grid_sample(tensor_view(src)[None], torch.from_numpy(grid)[None], mode="bilinear",
                        padding_mode="zeros", align_corners=False)
    return out[0].numpy()


def resample_patch(image: np.ndarray, label: np.ndarray | None, centre: Sequence[float], out_shape: tuple[int, ...],
                   matrix: np.ndarray, displacement: np.ndarray | None, backend: str
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a patch of ``out_shape`` voxels at ``centre + matrix @ o + displacement(o)``.

    Args:
        image: ``(C, *spatial)`` volume (not modified).
        label: ``(*spatial)`` integer classes, or ``None``.
        centre: patch centre in voxel indices of ``image`` (may be half-integer), one per axis.
        out_shape: output size in voxels, one per spatial axis.
        matrix: ``(d, d)`` composed matrix of the spatial draws.
        displacement: ``(d, *out_shape)`` voxel offsets, or ``None``.
        backend: ``"torch"`` or ``"scipy"`` linear interpolation (see :func:`linear_image`).

    Returns:
        ``(image (C, *out_shape) float32, label (*out_shape) or None)``, new arrays (safe to change in place).
    """
    perm = _signed_permutation(matrix) if displacement is None else None
    if perm is not None:
        img, lbl = _slice_path(image, label, centre, out_shape, perm, np.rint(matrix))
        return img.astype(np.float32, copy=False), lbl
    coords = sampling_coordinates(centre, out_shape, matrix, displacement)
    img = linear_image(image, coords, backend)
    return img, (None if label is None else nearest_label(label, coords))
