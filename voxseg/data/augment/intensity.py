"""Intensity augmentations: noise, blur, channel scale / shift, low resolution, gamma, sharpening, bias field
and channel dropping.

Each changes an image ``(C, *spatial)`` float32 in place (:meth:`Transform.apply`), after the spatial
transforms, and never touches the label. Intensities are in normalised units (after z-scoring).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from voxseg.data.augment.base import Transform, register

__all__ = ["BiasField", "ChannelDrop", "Gamma", "GaussianBlur", "GaussianNoise", "IntensityScale", "IntensityShift",
           "LowResolution", "Sharpen"]


def _per_channel(rng: np.random.Generator, low_high: tuple[float, float], image: np.ndarray) -> np.ndarray:
    c = image.shape[0]
    return rng.uniform(*low_high, size=c).astype(np.float32).reshape((c,) + (1,) * (image.ndim - 1))


@register
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


@register
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


@register
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


@register
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


@register
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


@register
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


@register
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


@register
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


@register
@dataclass(frozen=True)
class ChannelDrop(Transform):
    """Set one random input channel to zero (Henry et al. (2021) pipeline A: p = 0.16); needs >= 2 channels."""

    name: ClassVar[str] = "channel_drop"
    p: float = 0.0

    def apply(self, image, rng):
        if image.shape[0] > 1:
            image[int(rng.integers(image.shape[0]))] = 0.0
