"""Resampling as nnU-Net v2 does it (``preprocessing/resampling/default_resampling.py``), without its float64
copies of whole multi-class maps.

nnU-Net resizes with scikit-image's ``resize`` (``mode="edge"``, no anti-aliasing: ``scipy.ndimage.zoom`` with
``grid_mode=True``, then clipped to the input's range). When one axis is more than 3x coarser than the others
(in the current or the target spacing, a single such axis), it resizes each slice in-plane with ``order`` and
that axis separately with ``order_z`` (0: nearest). Images are resampled with order 3, the network's output
with order 1.

:func:`resample_data` does the same per channel in float32. :func:`logits_to_labels` resamples the output and
turns it into labels one slab of output slices at a time (linear along the slab axis, then bilinear in-plane,
which is exactly trilinear), so neither a float64 copy nor a full-resolution float map per class is made.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import zoom

__all__ = ["ANISO_THRESHOLD", "compute_new_shape", "logits_to_labels", "resample_data", "separate_z_axis"]

ANISO_THRESHOLD = 3.0
_SLAB_BYTES = 64 * 2**20


def compute_new_shape(shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]) -> tuple[int, ...]:
    """Voxels per axis after resampling from ``spacing`` to ``new_spacing`` (rounded, as nnU-Net)."""
    return tuple(int(round(s / n * k)) for s, n, k in zip(spacing, new_spacing, shape))


def _lowres_axis(spacing: Sequence[float]) -> int | None:
    axes = np.where(max(spacing) / np.array(spacing) == 1)[0]
    return int(axes[0]) if len(axes) == 1 else None


def separate_z_axis(spacing: Sequence[float], new_spacing: Sequence[float], force: bool | None = None,
                    threshold: float = ANISO_THRESHOLD) -> int | None:
    """The axis nnU-Net resamples separately (``determine_do_sep_z_and_axis``), or ``None``.

    ``force`` ``True``/``False`` overrides the anisotropy test (``force_separate_z`` of the plans)."""
    if force is not None:
        return _lowres_axis(spacing) if force else None
    for sp in (spacing, new_spacing):
        if max(sp) / min(sp) > threshold:
            return _lowres_axis(sp)
    return None


def _resize(image: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """scikit-image ``resize(image, shape, order, mode="edge", anti_aliasing=False)`` (clip on) in float32."""
    if tuple(image.shape) == tuple(shape):
        return image
    out = zoom(image, [n / o for n, o in zip(shape, image.shape)], order=order, mode="nearest", grid_mode=True)
    if order > 0:
        np.clip(out, image.min(), image.max(), out=out)
    return out


def _axis_map(n_in: int, n_out: int, nearest: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index along one axis: the two input indices and the weight of the second (align-corners
    false, edges extended), as ``zoom(grid_mode=True, mode="nearest")`` / ``map_coordinates`` compute them."""
    cc = (n_in / n_out) * (np.arange(n_out, dtype=np.float64) + 0.5) - 0.5
    if nearest:
        i0 = np.clip(np.floor(cc + 0.5), 0, n_in - 1).astype(np.int64)
        return i0, i0, np.zeros(n_out, np.float32)
    cc = np.maximum(cc, 0.0)
    i0 = np.minimum(np.floor(cc), n_in - 1).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (cc - i0).astype(np.float32)


def _resample_axis(data: np.ndarray, axis: int, n_out: int, order: int) -> np.ndarray:
    """Resize ``data`` along spatial ``axis`` (0-based, after the channel axis) only."""
    if data.shape[axis + 1] == n_out:
        return data
    if order == 0:
        return np.take(data, _axis_map(data.shape[axis + 1], n_out, True)[0], axis=axis + 1)
    factors = [1.0] * data.ndim
    factors[axis + 1] = n_out / data.shape[axis + 1]
    return np.stack([zoom(c, factors[1:], order=order, mode="nearest", grid_mode=True) for c in data])


def resample_data(data: np.ndarray, new_shape: Sequence[int], spacing: Sequence[float],
                  new_spacing: Sequence[float], order: int = 3, order_z: int = 0,
                  force_separate_z: bool | None = None) -> np.ndarray:
    """Images ``(C, *spatial)`` to ``new_shape`` as nnU-Net's ``resample_data_or_seg_to_shape`` (float32 out).

    Args:
        spacing, new_spacing: mm per axis before and after (only for the separate-axis decision).
        order: spline order in-plane (or in 3D); order_z: along a separately handled axis.
        force_separate_z: the plans' ``force_separate_z`` (``None``: decide by anisotropy).
    """
    data = np.asarray(data, dtype=np.float32)
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(data.shape[1:]) == new_shape:
        return data
    axis = separate_z_axis(spacing, new_spacing, force_separate_z) if data.ndim == 4 else None
    if axis is None:
        return np.stack([_resize(c, new_shape, order) for c in data])
    plane = tuple(s for i, s in enumerate(new_shape) if i != axis)
    out = np.empty((data.shape[0], *[n if i != axis else data.shape[axis + 1] for i, n in enumerate(new_shape)]),
                   np.float32)
    for c in range(data.shape[0]):
        for k in range(data.shape[axis + 1]):
            index = (c, *[k if i == axis else slice(None) for i in range(3)])
            out[index] = _resize(data[index], plane, order)
    return _resample_axis(out, axis, new_shape[axis], order_z)


def _labels(logits: torch.Tensor, regions: Sequence[int] | None) -> torch.Tensor:
    """``(C, ...)`` logits -> labels: argmax, or regions painted in ``regions_class_order`` where
    sigmoid > 0.5 (later regions over earlier ones)."""
    if regions is None:
        return logits.argmax(0).to(torch.int16)
    labels = torch.zeros(logits.shape[1:], dtype=torch.int16)
    for i, value in enumerate(regions):
        labels[torch.sigmoid(logits[i]) > 0.5] = int(value)
    return labels


def logits_to_labels(logits: torch.Tensor, new_shape: Sequence[int], spacing: Sequence[float],
                     new_spacing: Sequence[float], regions: Sequence[int] | None = None, order: int = 1,
                     order_z: int = 0, force_separate_z: bool | None = None) -> np.ndarray:
    """The label map at ``new_shape`` of float logits ``(C, Z, Y, X)``: nnU-Net's probability resampling
    (``resampling_fn_probabilities``, order 1 / order_z 0) followed by argmax or region painting.

    Slabs of output slices along the separate axis (else axis 0) are interpolated and labelled in turn; other
    orders than 0 and 1 fall back to :func:`resample_data` per channel (a full-size float32 map).

    Returns:
        ``new_shape`` int16 numpy labels.
    """
    new_shape = tuple(int(s) for s in new_shape)
    logits = logits.float()
    if order not in (0, 1) or order_z not in (0, 1):
        full = resample_data(logits.numpy(), new_shape, spacing, new_spacing, order, order_z, force_separate_z)
        return _labels(torch.from_numpy(full), regions).numpy()
    sep = separate_z_axis(spacing, new_spacing, force_separate_z)
    axis = 0 if sep is None else sep
    n_in = logits.shape[axis + 1]
    i0, i1, w = _axis_map(n_in, new_shape[axis], (order_z if sep is not None else order) == 0)
    plane = tuple(s for i, s in enumerate(new_shape) if i != axis)
    moved = logits.movedim(axis + 1, 0)  # (n_in, C, a, b)
    per_slice = 4 * logits.shape[0] * max(int(np.prod(plane)), int(np.prod(moved.shape[2:])))
    step = max(1, _SLAB_BYTES // max(per_slice, 1))
    out = torch.empty((new_shape[axis], *plane), dtype=torch.int16)
    mode = "bilinear" if order == 1 else "nearest-exact"
    for start in range(0, new_shape[axis], step):
        j = slice(start, min(start + step, new_shape[axis]))
        a, b = torch.from_numpy(i0[j]), torch.from_numpy(i1[j])
        slab = moved.index_select(0, a)
        if (w[j] != 0).any():
            wt = torch.from_numpy(w[j]).view(-1, 1, 1, 1)
            slab = slab * (1 - wt) + moved.index_select(0, b) * wt
        if tuple(slab.shape[2:]) != plane:
            slab = F.interpolate(slab, size=plane, mode=mode, **({"align_corners": False} if order == 1 else {}))
        out[j] = _labels(slab.movedim(1, 0), regions)
    return out.movedim(0, axis).numpy()
