"""Spatial augmentations: flips, axial rot90, rotation, scaling and elastic deformation.

Each only *draws* a matrix or a displacement field (:class:`voxseg.data.augment.base.Draw`);
:class:`voxseg.data.augment.Augmenter` composes the draws of one sample into a single resampling.
Matrices act on output voxel offsets from the patch centre, in voxel units; axis 0 is Z in 3-D and
Y in 2-D.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from voxseg.data.augment.base import Draw, SpatialTransform, register

__all__ = ["Elastic", "Flip", "Rot90", "Rotation", "Scaling", "plane_rotation"]


def _axes(axes: tuple[int, ...] | None, d: int) -> tuple[int, ...]:
    return tuple(range(d)) if axes is None else tuple(a for a in axes if a < d)


def plane_rotation(d: int, a: int, b: int, angle: float) -> np.ndarray:
    """``(d, d)`` matrix rotating the sampling grid by ``angle`` (radians) in the plane of axes ``(a, b)``.

    With ``angle = pi/2`` the output equals ``np.rot90(x, 1, axes=(a, b))`` (for a square plane);
    values within 1e-12 of an integer are snapped so right angles stay exact.
    """
    c, s = math.cos(angle), math.sin(angle)
    c, s = (round(v) if abs(v - round(v)) < 1e-12 else v for v in (c, s))
    m = np.eye(d)
    m[a, a], m[a, b], m[b, a], m[b, b] = c, s, -s, c
    return m


@register
@dataclass(frozen=True)
class Flip(SpatialTransform):
    """Mirror each spatial axis independently with probability ``p`` (nnU-Net: 0.5 per axis).

    Attributes:
        axes: spatial axes that may flip (0 = Z in 3-D, Y in 2-D); ``None`` = all.
    """

    name: ClassVar[str] = "flip"
    p: float = 0.5
    axes: tuple[int, ...] | None = None

    def fires(self, rng):
        return self.p > 0  # p is per axis, drawn in draw()

    def draw(self, rng, out_shape):
        d = len(out_shape)
        m = np.eye(d)
        for a in _axes(self.axes, d):
            if rng.random() < self.p:
                m[a, a] = -1.0
        return Draw(matrix=m)


@register
@dataclass(frozen=True)
class Rot90(SpatialTransform):
    """Rotate by 90, 180 or 270 degrees (uniform) in the axial plane: (Y, X) of 3-D, the plane of 2-D.

    Attributes:
        plane: the two spatial axes of the plane in 3-D (default ``(1, 2)`` = Y, X).
    """

    name: ClassVar[str] = "rot90"
    p: float = 0.2
    plane: tuple[int, int] = (1, 2)

    def draw(self, rng, out_shape):
        d = len(out_shape)
        a, b = self.plane if d == 3 else (0, 1)
        k = int(rng.integers(1, 4))
        return Draw(matrix=plane_rotation(d, a, b, k * math.pi / 2))


@register
@dataclass(frozen=True)
class Rotation(SpatialTransform):
    """Rotate by a random angle about each axis (nnU-Net: U(-30, 30) degrees per axis, p = 0.2).

    Attributes:
        angle: ``(low, high)`` degrees, drawn independently per rotation axis.
        axes: rotation axes in 3-D (0 = about Z, i.e. in the (Y, X) plane); ``None`` = all three.
            2-D has a single rotation.
    """

    name: ClassVar[str] = "rotation"
    p: float = 0.2
    angle: tuple[float, float] = (-30.0, 30.0)
    axes: tuple[int, ...] | None = None

    def draw(self, rng, out_shape):
        d = len(out_shape)
        if d == 2:
            return Draw(matrix=plane_rotation(2, 0, 1, math.radians(rng.uniform(*self.angle))))
        m = np.eye(3)
        for axis in _axes(self.axes, 3):
            a, b = [x for x in range(3) if x != axis]
            m = m @ plane_rotation(3, a, b, math.radians(rng.uniform(*self.angle)))
        return Draw(matrix=m)


@register
@dataclass(frozen=True)
class Scaling(SpatialTransform):
    """Zoom by one factor for all axes (nnU-Net: U(0.7, 1.4), p = 0.2); > 1 shows more of the volume.

    Attributes:
        factor: ``(low, high)`` zoom-out factor (the sampling grid is multiplied by it).
    """

    name: ClassVar[str] = "scaling"
    p: float = 0.2
    factor: tuple[float, float] = (0.7, 1.4)

    def draw(self, rng, out_shape):
        return Draw(matrix=np.eye(len(out_shape)) * rng.uniform(*self.factor))


def _bspline_basis(n: int, spacing: float) -> np.ndarray:
    """``(n, k)`` cubic B-spline weights of ``n`` voxels on control points ``spacing`` voxels apart."""
    k = int(math.ceil((n - 1) / spacing)) + 4
    t = np.arange(n) / spacing + 1.0  # control point j sits at voxel (j - 1) * spacing
    u = np.abs(t[:, None] - np.arange(k)[None, :])
    w = np.where(u < 1, (4 - 6 * u ** 2 + 3 * u ** 3) / 6, np.where(u < 2, (2 - u) ** 3 / 6, 0.0))
    return w.astype(np.float32)


def _smooth_field(coarse: np.ndarray, out_shape: tuple[int, ...], spacing: float) -> np.ndarray:
    """Upsample control-point values ``(..., k0, k1[, k2])`` to ``(..., *out_shape)`` separably (BLAS)."""
    f = coarse
    for axis, n in enumerate(out_shape):
        # Contract one control axis at a time: cost ~ prod(out_shape) * k, never a dense 3-D filter.
        ax = f.ndim - len(out_shape) + axis
        f = np.moveaxis(np.tensordot(f, _bspline_basis(n, spacing), axes=([ax], [1])), -1, ax)
    return f


@register
@dataclass(frozen=True)
class Elastic(SpatialTransform):
    """Smooth random deformation: cubic B-spline of Gaussian control-point displacements.

    nnU-Net v1 used alpha U(0, 900), sigma U(9, 13) voxels with p = 0.2: a field std of up to about
    1.7-2.9 voxels. Here control points 16 voxels apart with coefficient std up to 4 voxels give a
    field std of up to about 2.4 voxels (cubic B-spline weights shrink the std by ~0.6 in 3-D).

    Attributes:
        magnitude: ``(low, high)`` std of control-point displacements, voxels.
        spacing: distance between control points, voxels (larger = smoother).
    """

    name: ClassVar[str] = "elastic"
    p: float = 0.2
    magnitude: tuple[float, float] = (0.0, 4.0)
    spacing: float = 16.0

    def draw(self, rng, out_shape):
        d = len(out_shape)
        sizes = [int(math.ceil((n - 1) / self.spacing)) + 4 for n in out_shape]
        coarse = rng.standard_normal((d, *sizes), dtype=np.float32) * np.float32(rng.uniform(*self.magnitude))
        return Draw(displacement=_smooth_field(coarse, tuple(out_shape), self.spacing))
