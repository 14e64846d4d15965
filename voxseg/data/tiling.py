"""Sliding-window prediction with Gaussian importance weighting (arrays in, arrays out): the whole-volume
counterpart of patch sampling, used by validation during training and by inference (``voxseg.infer``
re-exports it). The network is a ``predictor`` callable, so nothing here depends on ``voxseg.nets``.

The window grid follows nnU-Net's ``compute_steps_for_sliding_window``: for each axis the number of
windows is ``ceil((size - patch) / (patch * (1 - overlap))) + 1`` spread evenly from 0 to
``size - patch``, so windows touch both borders and overlap by at least ``overlap``.
"""
from __future__ import annotations

import itertools
import math
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from voxseg.data.arrays import tensor_view

__all__ = ["gaussian_importance_map", "window_starts", "window_grid", "sliding_window_predict"]


@lru_cache(maxsize=8)
def _gaussian_cached(patch_size: tuple[int, ...], sigma_scale: float) -> np.ndarray:
    centre = np.zeros(patch_size, dtype=np.float64)
    centre[tuple(s // 2 for s in patch_size)] = 1.0
    gauss = gaussian_filter(centre, sigma=[s * sigma_scale for s in patch_size], mode="constant", cval=0.0)
    gauss = gauss / gauss.max()
    # Zeros at the border would make voxels covered only there undefined: floor at the smallest positive value.
    gauss[gauss == 0] = gauss[gauss > 0].min()
    gauss = gauss.astype(np.float32)
    gauss.setflags(write=False)
    return gauss


def gaussian_importance_map(patch_size: tuple[int, ...], sigma_scale: float = 1.0 / 8) -> np.ndarray:
    """Weights of a window's voxels: a Gaussian centred in the patch, sigma = ``sigma_scale * size``.

    Args:
        patch_size: window size in voxels, ``(pz, py, px)`` or ``(py, px)``.
        sigma_scale: sigma as a fraction of the patch size per axis (nnU-Net uses 1/8).

    Returns:
        float32 array of ``patch_size``, maximum 1, strictly positive (read-only, cached).
    """
    return _gaussian_cached(tuple(int(s) for s in patch_size), float(sigma_scale))


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices (voxels) of the windows along one axis.

    Args:
        size: length of the (padded) volume along the axis, ``>= patch``.
        patch: window length along the axis.
        overlap: fraction of a window shared with its neighbour, in ``[0, 1)``.
    """
    if size < patch:
        raise ValueError(f"volume size {size} is smaller than the window {patch}; pad first")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    step = patch * (1.0 - overlap)
    n = int(math.ceil((size - patch) / step)) + 1 if size > patch else 1
    if n == 1:
        return [0]
    actual = (size - patch) / (n - 1)
    return [int(round(actual * i)) for i in range(n)]


def window_grid(spatial: Sequence[int], patch_size: Sequence[int], overlap: float) -> list[list[int]]:
    """Window starts per axis (voxels) for a volume of ``spatial`` shape; axes shorter than the window
    are zero-padded to it first, as :func:`sliding_window_predict` does. The number of windows is the
    product of the list lengths."""
    return [window_starts(max(s, p), p, overlap) for s, p in zip(spatial, patch_size)]


def sliding_window_predict(
    image: np.ndarray,
    predictor: Callable[[torch.Tensor], torch.Tensor],
    patch_size: tuple[int, ...],
    num_outputs: int,
    overlap: float = 0.5,
    batch_size: int = 2,
    gaussian: bool = True,
    activation: str = "softmax",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Predict a whole volume by blending overlapping windows.

    Args:
        image: ``(C, *spatial)`` float32 input; spatial is ``(Z, Y, X)`` or ``(Y, X)`` and matches
            ``len(patch_size)``. Axes shorter than the window are zero-padded (then cropped back).
        predictor: maps a ``(B, C, *patch_size)`` float32 tensor to ``(B, num_outputs, *patch_size)``
            logits (e.g. a network in eval mode, possibly under autocast).
        patch_size: window size in voxels.
        num_outputs: number of output channels of ``predictor``.
        overlap: fraction of overlap between neighbouring windows, in ``[0, 1)``.
        batch_size: windows per forward pass.
        gaussian: weight voxels by :func:`gaussian_importance_map` (else uniform weights).
        activation: ``"softmax"``, ``"sigmoid"`` or ``"none"``, applied per window before blending.
        progress: called with the number of windows just processed (for a progress bar).

    Returns:
        ``(num_outputs, *spatial)`` float32 probabilities (or blended logits for ``"none"``).
    """
    spatial = image.shape[1:]
    if len(spatial) != len(patch_size):
        raise ValueError(f"image spatial dims {spatial} do not match patch {patch_size}")
    pad = [(0, 0)] + [(0, max(p - s, 0)) for s, p in zip(spatial, patch_size)]
    padded = np.pad(image, pad) if any(p[1] for p in pad) else image
    pshape = padded.shape[1:]
    windows = list(itertools.product(*window_grid(spatial, patch_size, overlap)))
    weight = gaussian_importance_map(tuple(patch_size)) if gaussian else np.ones(patch_size, np.float32)
    weight_t = torch.from_numpy(np.array(weight))
    accum = torch.zeros((num_outputs, *pshape), dtype=torch.float32)
    norm = torch.zeros(pshape, dtype=torch.float32)
    source = tensor_view(np.ascontiguousarray(padded, dtype=np.float32))  # only read (windows are stacked copies)
    for first in range(0, len(windows), batch_size):
        chunk = windows[first:first + batch_size]
        slices = [tuple(slice(st, st + p) for st, p in zip(start, patch_size)) for start in chunk]
        batch = torch.stack([source[(slice(None),) + sl] for sl in slices])
        with torch.no_grad():
            out = predictor(batch).float()
        if activation == "softmax":
            out = torch.softmax(out, dim=1)
        elif activation == "sigmoid":
            out = torch.sigmoid(out)
        for k, sl in enumerate(slices):
            accum[(slice(None),) + sl] += out[k] * weight_t
            norm[sl] += weight_t
        if progress is not None:
            progress(len(chunk))
    accum /= norm
    crop = (slice(None),) + tuple(slice(0, s) for s in spatial)
    return accum[crop].numpy()
