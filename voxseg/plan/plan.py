"""Shapes planned from the data: the patch, nnU-Net's target spacing, and strides for anisotropic voxels."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["plan_patch_size", "plan_strides", "plan_target_spacing"]


def plan_patch_size(
    median_shape: tuple[int, ...],
    divisor: int | Sequence[int],
    max_voxels: int,
    spatial_dims: int = 3,
) -> list[int]:
    """Choose a patch from the data: the median (cropped, resampled) case shape, rounded up to a
    multiple of ``divisor``, then shrunk (largest axis first) until it holds at most ``max_voxels``.

    Args:
        median_shape: ``(Z, Y, X)`` median shape of the preprocessed cases, voxels.
        divisor: network size divisor (2^(depth-1)), one for every axis or one per network axis (``(Z, Y, X)``,
            or ``(Y, X)`` for 2-D; anisotropic strides, :func:`plan_strides`).
        max_voxels: memory/time cap on the patch volume (e.g. 128^3 on a GPU, ~64^3-96^3 on a CPU).
        spatial_dims: 3 for patches; 2 gives ``(1, Y, X)`` slices.

    Returns:
        ``[pz, py, px]`` in voxels.
    """
    shape = [int(s) for s in median_shape]
    if spatial_dims == 2:
        shape = shape[1:]
    div = [int(divisor)] * len(shape) if isinstance(divisor, (int, np.integer)) else [int(d) for d in divisor]
    if len(div) != len(shape):
        raise ValueError(f"divisor {divisor} does not match the {len(shape)} network axes")
    patch = [max(d, int(math.ceil(s / d)) * d) for s, d in zip(shape, div)]
    while int(np.prod(patch)) > max_voxels:
        shrinkable = [a for a in range(len(patch)) if patch[a] > div[a]]
        if not shrinkable:
            break
        axis = max(shrinkable, key=lambda a: patch[a])
        patch[axis] -= div[axis]
    return ([1] + patch) if spatial_dims == 2 else patch


def plan_target_spacing(spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]],
                        tolerance: float = 1.25) -> list[float] | None:
    """The spacing to resample every case to when the cases' spacings differ, by nnU-Net's rule
    (``determine_fullres_target_spacing``, Isensee et al. 2021): the median spacing per axis; but when the
    median is anisotropic (its coarsest axis over 3x the others, with under a third of their voxels along it),
    that axis takes the 10th percentile of its spacings instead (never finer than the other axes), so the
    resampled cases do not lose most of their slices' detail to a few coarse cases.

    Args:
        spacings: ``(sz, sy, sx)`` per case, mm, in the run's voxel order.
        shapes: ``(Z, Y, X)`` per case, voxels. voxseg passes the files' shapes: the target is chosen before
            any case is cropped (the crop's cache depends on it), where nnU-Net uses the cropped shapes, so a
            scan with much air around the body can tip the anisotropy test differently.
        tolerance: spacings within this factor of each other along every axis count as one spacing.

    Returns:
        ``[sz, sy, sx]`` in mm, or ``None`` when every axis's spacings lie within ``tolerance`` of each other
        (nothing to resample; the cases keep their own grids).
    """
    sp, sh = np.asarray(spacings, dtype=np.float64), np.asarray(shapes, dtype=np.float64)
    if sp.ndim != 2 or not len(sp) or (sp <= 0).any():
        raise ValueError("need one positive (sz, sy, sx) spacing per case")
    if (sp.max(0) <= tolerance * sp.min(0)).all():
        return None
    target = np.percentile(sp, 50, axis=0)
    size = np.percentile(sh, 50, axis=0)
    coarse = int(np.argmax(target))
    others = [a for a in range(len(target)) if a != coarse]
    if target[coarse] > 3 * max(target[others]) and size[coarse] * 3 < min(size[others]):
        target[coarse] = max(float(np.percentile(sp[:, coarse], 10)), max(target[others]) + 1e-5)
    return [round(float(v), 6) for v in target]


def plan_strides(spacing: Sequence[float], depth: int) -> tuple[list[list[int]], list[list[int]]] | None:
    """Down-sampling strides and convolution kernels of a U-Net for voxels of ``spacing``, by nnU-Net's rule
    (``get_pool_and_conv_props``, Isensee et al. 2021): a step down-samples only the axes whose current spacing
    is within a factor 2 of the finest, and a kernel is 1 (not 3) along an axis until its spacing comes within a
    factor 2 of the finest. Thick slices (5 x 0.8 x 0.8 mm) thus keep their few slices through the first
    stages, and the network sees about as far along every axis in millimetres. Unlike nnU-Net the number of
    steps is given (``depth - 1``) and the patch is planned afterwards, from the resulting divisors.

    Args:
        spacing: voxel spacing of the network's axes in mm, ``(sz, sy, sx)`` or ``(sy, sx)``.
        depth: resolution stages of the network (``depth - 1`` down-sampling steps).

    Returns:
        ``(strides, kernel_sizes)``: ``depth - 1`` strides and ``depth`` kernel sizes, one int per axis, for
        ``UNet(strides=..., kernel_sizes=...)``; or ``None`` when they are the defaults (2 and 3 everywhere:
        no axis is twice as coarse as another).
    """
    current = [float(v) for v in spacing]
    if not current or min(current) <= 0:
        raise ValueError(f"spacings must be positive, got {current}")
    kernel = [1] * len(current)
    strides, kernels = [], []
    for _ in range(depth - 1):
        finest = min(current)
        kernel = [3 if k == 3 or c / finest < 2 else 1 for k, c in zip(kernel, current)]
        kernels.append(list(kernel))
        step = [2 if c / finest < 2 else 1 for c in current]
        strides.append(step)
        current = [c * st for c, st in zip(current, step)]
    kernels.append([3] * len(current))  # the deepest stage: 3 along every axis, as nnU-Net
    if all(v == 2 for st in strides for v in st) and all(v == 3 for k in kernels for v in k):
        return None
    return strides, kernels
