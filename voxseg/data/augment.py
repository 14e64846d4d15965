"""Training augmentations: one base contract, a registry, a typed config and a fast combined pipeline.

Every transform takes an image ``(C, *spatial)`` float32 and a label ``(*spatial)`` (or ``None``)
together, works for 2-D ``(C, Y, X)`` and 3-D ``(C, Z, Y, X)`` arrays, is applied with probability
``p`` and draws all randomness from the ``numpy.random.Generator`` passed in (no global state).

Spatial transforms (flip, axial rot90, rotation, scaling, elastic) only *contribute* a matrix or a
displacement field; :class:`Augmenter` composes them into one coordinate grid over the output patch
and resamples image (linear) and label (nearest) once, straight from the whole volume
(:meth:`Augmenter.extract`), so a patch is never cropped twice nor interpolated twice. When the
draw is a pure flip / rot90 (the common case) the patch is cut by slicing instead, exactly.

Coordinates are voxel indices; an output voxel ``o`` (relative to the patch centre) reads the input
at ``centre + M @ o + d(o)``. Defaults follow nnU-Net (probabilities and ranges) and Henry et al. (2021)
(channel scale / shift / drop); axial rot90 (p = 0.2) is ours, nnU-Net has none.

Adding a transform: one frozen dataclass subclass with ``@_register`` and one field in
:class:`AugmentConfig`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from voxseg.data.arrays import tensor_view

__all__ = [
    "TRANSFORMS",
    "Transform",
    "SpatialTransform",
    "Flip",
    "Rot90",
    "Rotation",
    "Scaling",
    "Elastic",
    "GaussianNoise",
    "GaussianBlur",
    "IntensityScale",
    "IntensityShift",
    "LowResolution",
    "Gamma",
    "Sharpen",
    "BiasField",
    "ChannelDrop",
    "AugmentConfig",
    "Augmenter",
    "build_augmentation",
]

TRANSFORMS: dict[str, type["Transform"]] = {}


def _register(cls):
    TRANSFORMS[cls.name] = cls
    return cls


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples the dataclasses hold (nested)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _lists(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_lists(v) for v in value]
    return value


@dataclass(frozen=True)
class Transform:
    """Base contract: with probability ``p`` change ``(image, label)``; otherwise return them unchanged.

    Subclasses are frozen dataclasses whose fields are the transform's probability and ranges, set a
    unique ``name`` and implement :meth:`apply` (intensity) or :meth:`draw` (spatial).

    Attributes:
        p: probability of applying the transform to a sample, in ``[0, 1]``.
    """

    name: ClassVar[str] = ""
    p: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"{self.name}: p must be in [0, 1], got {self.p}")

    def __call__(self, image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """Apply to one sample; the inputs are never modified.

        Args:
            image: ``(C, *spatial)`` float32.
            label: ``(*spatial)`` integer classes, or ``None``.
            rng: generator (one ``rng.random()`` decides whether the transform fires).

        Returns:
            ``(image, label)`` of the same shapes (new arrays when the transform fired).
        """
        return Augmenter([self])(image, label, rng)

    def fires(self, rng: np.random.Generator) -> bool:
        """Whether the transform applies to this sample (one draw)."""
        return rng.random() < self.p

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> None:
        """Change ``image`` ``(C, *spatial)`` float32 in place (intensity transforms)."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {f.name: _lists(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "Transform":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"{cls.name}: unknown parameters {sorted(unknown)}; known: {sorted(names)}")
        return cls(**{k: _tuples(v) for k, v in data.items()})


@dataclass(frozen=True)
class _Draw:
    """A spatial transform's contribution: a ``(d, d)`` matrix and/or a displacement ``(d, *out)`` (voxels)."""

    matrix: np.ndarray | None = None
    displacement: np.ndarray | None = None


@dataclass(frozen=True)
class SpatialTransform(Transform):
    """A transform that moves voxels; combined with the others into one resampling by :class:`Augmenter`."""

    def draw(self, rng: np.random.Generator, out_shape: tuple[int, ...]) -> _Draw:
        """Random parameters for an output patch of ``out_shape`` voxels (``d = len(out_shape)``)."""
        raise NotImplementedError


def _axes(axes: tuple[int, ...] | None, d: int) -> tuple[int, ...]:
    return tuple(range(d)) if axes is None else tuple(a for a in axes if a < d)


@_register
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
        return _Draw(matrix=m)


@_register
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
        return _Draw(matrix=_plane_rotation(d, a, b, k * math.pi / 2))


def _plane_rotation(d: int, a: int, b: int, angle: float) -> np.ndarray:
    """Matrix rotating the sampling grid by ``angle`` (radians) in the plane of axes ``(a, b)``.

    With ``angle = pi/2`` the output equals ``np.rot90(x, 1, axes=(a, b))`` (for a square plane);
    values within 1e-12 of an integer are snapped so right angles stay exact.
    """
    c, s = math.cos(angle), math.sin(angle)
    c, s = (round(v) if abs(v - round(v)) < 1e-12 else v for v in (c, s))
    m = np.eye(d)
    m[a, a], m[a, b], m[b, a], m[b, b] = c, s, -s, c
    return m


@_register
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
            return _Draw(matrix=_plane_rotation(2, 0, 1, math.radians(rng.uniform(*self.angle))))
        m = np.eye(3)
        for axis in _axes(self.axes, 3):
            a, b = [x for x in range(3) if x != axis]
            m = m @ _plane_rotation(3, a, b, math.radians(rng.uniform(*self.angle)))
        return _Draw(matrix=m)


@_register
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
        return _Draw(matrix=np.eye(len(out_shape)) * rng.uniform(*self.factor))


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


@_register
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
        return _Draw(displacement=_smooth_field(coarse, tuple(out_shape), self.spacing))


# ----------------------------------------------------------------------------------------- intensity


def _per_channel(rng: np.random.Generator, low_high: tuple[float, float], image: np.ndarray) -> np.ndarray:
    c = image.shape[0]
    return rng.uniform(*low_high, size=c).astype(np.float32).reshape((c,) + (1,) * (image.ndim - 1))


@_register
@dataclass(frozen=True)
class GaussianNoise(Transform):
    """Add zero-mean Gaussian noise with a std drawn per sample (nnU-Net p = 0.1; Henry et al. (2021) std 0.1).

    Attributes:
        std: ``(low, high)`` noise std, in normalised intensity units.
    """

    name: ClassVar[str] = "noise"
    p: float = 0.1
    std: tuple[float, float] = (0.0, 0.1)

    def apply(self, image, rng):
        sd = np.float32(rng.uniform(*self.std))
        noise = rng.standard_normal(image.shape, dtype=np.float32)
        noise *= sd
        image += noise


def _blur(channel: np.ndarray, sigma: float) -> None:
    ndimage.gaussian_filter(channel, sigma, output=channel, mode="nearest", truncate=3.0)


@_register
@dataclass(frozen=True)
class GaussianBlur(Transform):
    """Gaussian smoothing with one sigma per channel (nnU-Net: U(0.5, 1) voxels, p = 0.2).

    Attributes:
        sigma: ``(low, high)`` kernel std, voxels.
    """

    name: ClassVar[str] = "blur"
    p: float = 0.2
    sigma: tuple[float, float] = (0.5, 1.0)

    def apply(self, image, rng):
        for c in range(image.shape[0]):
            _blur(image[c], rng.uniform(*self.sigma))


@_register
@dataclass(frozen=True)
class IntensityScale(Transform):
    """Multiply each channel by its own factor (Henry et al. 2021: U(0.9, 1.1), pipeline B p = 0.2).

    Attributes:
        factor: ``(low, high)`` multiplicative factor.
    """

    name: ClassVar[str] = "intensity_scale"
    p: float = 0.2
    factor: tuple[float, float] = (0.9, 1.1)

    def apply(self, image, rng):
        image *= _per_channel(rng, self.factor, image)


@_register
@dataclass(frozen=True)
class IntensityShift(Transform):
    """Add a constant per channel (Henry et al. 2021: U(-0.1, 0.1), p = 0.2).

    Attributes:
        offset: ``(low, high)`` additive offset, normalised intensity units.
    """

    name: ClassVar[str] = "intensity_shift"
    p: float = 0.2
    offset: tuple[float, float] = (-0.1, 0.1)

    def apply(self, image, rng):
        image += _per_channel(rng, self.offset, image)


@_register
@dataclass(frozen=True)
class LowResolution(Transform):
    """Simulate a coarser scan: downsample (nearest) by a zoom factor, upsample back (linear).

    nnU-Net uses U(0.5, 1) with p = 0.25.

    Attributes:
        zoom: ``(low, high)`` fraction of the resolution kept.
    """

    name: ClassVar[str] = "low_resolution"
    p: float = 0.25
    zoom: tuple[float, float] = (0.5, 1.0)

    def apply(self, image, rng):
        z = rng.uniform(*self.zoom)
        spatial = image.shape[1:]
        small = [max(1, int(round(n * z))) for n in spatial]
        t = torch.from_numpy(image)[None]
        mode = "trilinear" if len(spatial) == 3 else "bilinear"
        low = F.interpolate(t, size=small, mode="nearest")
        image[...] = F.interpolate(low, size=spatial, mode=mode, align_corners=False)[0].numpy()


@_register
@dataclass(frozen=True)
class Gamma(Transform):
    """Gamma on each channel rescaled to [0, 1], then rescaled back (nnU-Net: U(0.7, 1.5), p = 0.3).

    Attributes:
        gamma: ``(low, high)`` exponent.
        retain_stats: restore each channel's mean and std afterwards (nnU-Net does).
    """

    name: ClassVar[str] = "gamma"
    p: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    retain_stats: bool = True

    def apply(self, image, rng):
        for c in range(image.shape[0]):
            g = rng.uniform(*self.gamma)
            x = image[c]
            lo, hi = float(x.min()), float(x.max())
            if hi - lo < 1e-8:
                continue
            if self.retain_stats:
                mean, std = float(x.mean()), float(x.std())
            x -= lo
            x *= np.float32(1.0 / (hi - lo))
            np.power(x, np.float32(g), out=x)
            x *= np.float32(hi - lo)
            x += np.float32(lo)
            if self.retain_stats:
                s = float(x.std())
                x -= np.float32(x.mean())
                x *= np.float32(std / max(s, 1e-8))
                x += np.float32(mean)


@_register
@dataclass(frozen=True)
class Sharpen(Transform):
    """Sharpen by subtracting a scaled Laplacian: ``x - s * laplace(x)`` (nnU-Net DA5-like).

    Attributes:
        strength: ``(low, high)`` factor ``s``.
    """

    name: ClassVar[str] = "sharpen"
    p: float = 0.0
    strength: tuple[float, float] = (0.1, 0.3)

    def apply(self, image, rng):
        for c in range(image.shape[0]):
            s = np.float32(rng.uniform(*self.strength))
            lap = ndimage.laplace(image[c], mode="nearest")
            lap *= s
            image[c] -= lap


@_register
@dataclass(frozen=True)
class BiasField(Transform):
    """Multiply by ``exp(P)``, ``P`` a random polynomial of the normalised coordinates (MRI coil bias).

    One field is shared by all channels. Coefficients are drawn U(-c, c), ``c`` from ``coefficient``.

    Attributes:
        coefficient: ``(low, high)`` bound ``c`` of the polynomial coefficients.
        order: polynomial order (total degree).
    """

    name: ClassVar[str] = "bias_field"
    p: float = 0.0
    coefficient: tuple[float, float] = (0.0, 0.5)
    order: int = 3

    def apply(self, image, rng):
        spatial = image.shape[1:]
        d, n = len(spatial), self.order + 1
        c = rng.uniform(*self.coefficient)
        coef = rng.uniform(-c, c, size=(n,) * d).astype(np.float32)
        degree = np.indices((n,) * d).sum(axis=0)
        coef[degree > self.order] = 0.0
        field_ = coef
        for axis, size in enumerate(spatial):
            t = np.linspace(-1.0, 1.0, size, dtype=np.float32)
            powers = np.stack([t ** k for k in range(n)], axis=1)  # (size, n)
            field_ = np.moveaxis(np.tensordot(field_, powers, axes=([axis], [1])), -1, axis)
        image *= np.exp(field_, dtype=np.float32)[None]


@_register
@dataclass(frozen=True)
class ChannelDrop(Transform):
    """Set one random input channel to zero (Henry et al. (2021) pipeline A: p = 0.16); needs >= 2 channels."""

    name: ClassVar[str] = "channel_drop"
    p: float = 0.0

    def apply(self, image, rng):
        if image.shape[0] > 1:
            image[int(rng.integers(image.shape[0]))] = 0.0


# ------------------------------------------------------------------------------------ resampling


def _signed_permutation(m: np.ndarray) -> np.ndarray | None:
    """``perm`` with ``m[perm[b], b] = +-1`` and zeros elsewhere, or ``None``."""
    r = np.rint(m)
    if np.abs(m - r).max() > 1e-9 or not (np.abs(r).sum(axis=0) == 1).all() or not (np.abs(r).sum(axis=1) == 1).all():
        return None
    return np.abs(r).argmax(axis=0)


def _window(array: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Copy ``array[..., start:start+size]`` over the last ``len(size)`` axes; outside is 0."""
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
            w = _window(x, start, size_in)
            if flips:
                w = np.flip(w, axis=[lead + a for a in flips])
        if order != list(range(d)):
            w = np.transpose(w, list(range(lead)) + [lead + a for a in order])
        return np.array(w, order="C")  # always a new array: later steps work in place

    return cut(image, 1), (None if label is None else cut(label, 0))


def _coordinates(centre, out_shape, matrix, displacement) -> np.ndarray:
    """Input voxel coordinates ``(d, *out_shape)`` float32 for each output voxel."""
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


def _nearest_label(label: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Nearest-neighbour lookup of ``label`` at ``coords`` ``(d, *out)``; 0 outside the volume."""
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


def _linear_image(image: np.ndarray, coords: np.ndarray, backend: str) -> np.ndarray:
    """Linear interpolation of all channels of ``image`` ``(C, *spatial)`` at ``coords``; 0 outside."""
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


class Augmenter:
    """A fixed pipeline: the spatial transforms as one resampling, then the intensity transforms in order.

    Args:
        transforms: transforms in application order (spatial ones are always combined first).
        backend: ``"torch"`` (grid_sample, all channels in one pass) or ``"scipy"`` (map_coordinates),
            for the linear interpolation of the image.
    """

    def __init__(self, transforms: Sequence[Transform], backend: str = "torch"):
        if backend not in ("torch", "scipy"):
            raise ValueError(f"backend must be 'torch' or 'scipy', got {backend!r}")
        self.transforms = list(transforms)
        self.spatial = [t for t in self.transforms if isinstance(t, SpatialTransform)]
        self.intensity = [t for t in self.transforms if not isinstance(t, SpatialTransform)]
        self.backend = backend

    def __repr__(self) -> str:
        return f"Augmenter({[t.name for t in self.transforms]}, backend={self.backend!r})"

    def __call__(self, image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """Augment a patch in place of itself (output shape = input shape); inputs are not modified.

        Args:
            image: ``(C, Z, Y, X)`` or ``(C, Y, X)`` float32.
            label: ``(Z, Y, X)`` / ``(Y, X)`` integer classes, or ``None``.
            rng: generator.

        Returns:
            ``(image float32, label same dtype)`` new arrays of the input shapes.
        """
        spatial = image.shape[1:]
        centre = [(n - 1) / 2.0 for n in spatial]
        return self.extract(image, label, centre, spatial, rng)

    def extract(self, image: np.ndarray, label: np.ndarray | None, centre: Sequence[float],
                patch_size: Sequence[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        """Cut an augmented patch straight out of a whole volume (one resampling, no double crop).

        Args:
            image: ``(C, *spatial)`` float32 volume (not modified; shared memory is fine).
            label: ``(*spatial)`` integer classes, or ``None``.
            centre: patch centre in voxel indices of ``image`` (may be half-integer), one per axis.
            patch_size: output size in voxels, one per spatial axis.
            rng: generator.

        Returns:
            ``(image (C, *patch_size) float32, label (*patch_size))``; outside the volume both are 0.
        """
        out_shape = tuple(int(n) for n in patch_size)
        d = image.ndim - 1
        if len(out_shape) != d or (label is not None and label.shape != image.shape[1:]):
            raise ValueError(f"image {image.shape}, label {None if label is None else label.shape} and "
                             f"patch_size {out_shape} disagree")
        matrix = np.eye(d)
        displacement = None
        for t in self.spatial:
            if t.fires(rng):
                drawn = t.draw(rng, out_shape)
                if drawn.matrix is not None:
                    matrix = matrix @ drawn.matrix
                if drawn.displacement is not None:
                    displacement = drawn.displacement if displacement is None else displacement + drawn.displacement
        perm = _signed_permutation(matrix) if displacement is None else None
        if perm is not None:
            img, lbl = _slice_path(image, label, centre, out_shape, perm, np.rint(matrix))
            img = img.astype(np.float32, copy=False)
        else:
            coords = _coordinates(centre, out_shape, matrix, displacement)
            img = _linear_image(image, coords, self.backend)
            lbl = None if label is None else _nearest_label(label, coords)
        for t in self.intensity:
            if t.fires(rng):
                t.apply(img, rng)
        return img, lbl


# ---------------------------------------------------------------------------------------- config


@dataclass
class AugmentConfig:
    """Every augmentation with its probability and ranges; field order is application order.

    Defaults are nnU-Net's (flip, rotation, scaling, noise, blur, low resolution, gamma), nnU-Net v1's
    elastic deformation, and Henry et al.'s (2021) channel scale / shift; sharpening, bias field and channel
    dropping are off (``p = 0``). Set a transform's ``p`` to 0 to disable it.
    Round trip: ``AugmentConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c``.

    Attributes:
        backend: interpolation backend of the combined spatial transform (``"torch"`` or ``"scipy"``).
    """

    flip: Flip = field(default_factory=Flip)
    rot90: Rot90 = field(default_factory=Rot90)
    rotation: Rotation = field(default_factory=Rotation)
    scaling: Scaling = field(default_factory=Scaling)
    elastic: Elastic = field(default_factory=Elastic)
    noise: GaussianNoise = field(default_factory=GaussianNoise)
    blur: GaussianBlur = field(default_factory=GaussianBlur)
    intensity_scale: IntensityScale = field(default_factory=IntensityScale)
    intensity_shift: IntensityShift = field(default_factory=IntensityShift)
    low_resolution: LowResolution = field(default_factory=LowResolution)
    gamma: Gamma = field(default_factory=Gamma)
    sharpen: Sharpen = field(default_factory=Sharpen)
    bias_field: BiasField = field(default_factory=BiasField)
    channel_drop: ChannelDrop = field(default_factory=ChannelDrop)
    backend: str = "torch"

    def transforms(self) -> list[Transform]:
        """The transforms in application order."""
        return [getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "backend"]

    def to_dict(self) -> dict:
        out: dict[str, Any] = {t.name: t.to_dict() for t in self.transforms()}
        out["backend"] = self.backend
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "AugmentConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown augmentations {sorted(unknown)}; known: {sorted(names)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            kwargs[key] = value if key == "backend" else TRANSFORMS[key].from_dict(value)
        return cls(**kwargs)

    def replace(self, **probabilities: float) -> "AugmentConfig":
        """A copy with the given transforms' ``p`` changed, e.g. ``cfg.replace(elastic=0, sharpen=0.1)``."""
        names = [f.name for f in dataclasses.fields(self) if f.name != "backend"]
        new = dataclasses.replace(self)
        for key, p in probabilities.items():
            if key not in names:
                raise ValueError(f"unknown transform {key!r}; transforms: {', '.join(names)}")
            if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
                raise ValueError(f"{key}={p!r}: a probability must be a number in [0, 1]")
            setattr(new, key, dataclasses.replace(getattr(self, key), p=float(p)))
        return new


def build_augmentation(config: AugmentConfig | None = None) -> Augmenter:
    """The :class:`Augmenter` for a config (default config when ``None``); transforms with p = 0 are skipped."""
    config = AugmentConfig() if config is None else config
    return Augmenter([t for t in config.transforms() if t.p > 0], backend=config.backend)
