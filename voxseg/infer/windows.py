"""Where the sliding window's windows go and how their voxels are weighted (arrays in, arrays out).

The window grid follows nnU-Net's ``compute_steps_for_sliding_window``: for each axis the number of
windows is ``ceil((size - patch) / (patch * (1 - overlap))) + 1`` spread evenly from 0 to
``size - patch``, so windows touch both borders and overlap by at least ``overlap``. The importance map
is nnU-Net's Gaussian (sigma 1/8 of the window per axis).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["gaussian_importance_map", "window_starts", "window_grid"]


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
    # A step under one voxel (a 2-D network's one-slice window) rounds to repeated starts: each window once.
    return sorted({int(round(actual * i)) for i in range(n)})


def window_grid(spatial: Sequence[int], patch_size: Sequence[int], overlap: float) -> list[list[int]]:
    """Window starts per axis (voxels) for a volume of ``spatial`` shape; axes shorter than the window
    are zero-padded to it first, as ``sliding_window_predict`` does. The number of windows is the
    product of the list lengths."""
    return [window_starts(max(s, p), p, overlap) for s, p in zip(spatial, patch_size)]
