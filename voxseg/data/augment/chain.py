"""The augmentation chain: :class:`AugmentConfig` (every transform with its probability and ranges) and
:class:`Augmenter`, which applies the spatial transforms as one resampling, then the intensity transforms.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from voxseg.data.augment.base import TRANSFORMS, SpatialTransform, Transform
from voxseg.data.augment.intensity import (BiasField, ChannelDrop, Gamma, GaussianBlur, GaussianNoise, IntensityScale,
                                           IntensityShift, LowResolution, Sharpen)
from voxseg.data.augment.resample import resample_patch
from voxseg.data.augment.spatial import Elastic, Flip, Rot90, Rotation, Scaling

__all__ = ["AugmentConfig", "Augmenter", "build_augmentation"]


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
        img, lbl = resample_patch(image, label, centre, out_shape, matrix, displacement, self.backend)
        for t in self.intensity:
            if t.fires(rng):
                t.apply(img, rng)
        return img, lbl


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
