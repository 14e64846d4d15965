"""The contract every augmentation follows, and the registry of augmentations by name.

A transform is a frozen dataclass whose fields are its probability ``p`` and its ranges. Intensity
transforms implement :meth:`Transform.apply` (change the image in place); spatial transforms
implement :meth:`SpatialTransform.draw` (return a :class:`Draw`: a matrix and/or a displacement
field), which :class:`voxseg.data.augment.Augmenter` composes into one resampling.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

__all__ = ["TRANSFORMS", "Draw", "SpatialTransform", "Transform", "register"]

#: Transform classes by their ``name`` (the key of the transform in :class:`AugmentConfig` and in plan.json).
TRANSFORMS: dict[str, type["Transform"]] = {}


def register(cls: type["Transform"]) -> type["Transform"]:
    """Class decorator: add a transform class to :data:`TRANSFORMS` under its ``name``."""
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
        from voxseg.data.augment.chain import Augmenter  # the chain module imports this one

        return Augmenter([self])(image, label, rng)

    def fires(self, rng: np.random.Generator) -> bool:
        """Whether the transform applies to this sample (one draw)."""
        return rng.random() < self.p

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> None:
        """Change ``image`` ``(C, *spatial)`` float32 in place (intensity transforms)."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        """JSON-able dict of the fields (tuples become lists)."""
        return {f.name: _lists(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "Transform":
        """Inverse of :meth:`to_dict`; missing fields take their defaults, unknown ones raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"{cls.name}: unknown parameters {sorted(unknown)}; known: {sorted(names)}")
        return cls(**{k: _tuples(v) for k, v in data.items()})


@dataclass(frozen=True)
class Draw:
    """A spatial transform's contribution for one sample.

    Attributes:
        matrix: ``(d, d)`` matrix applied to output voxel offsets from the patch centre, or ``None``.
        displacement: ``(d, *out_shape)`` float32 offsets in voxels added to the input coordinates, or ``None``.
    """

    matrix: np.ndarray | None = None
    displacement: np.ndarray | None = None


@dataclass(frozen=True)
class SpatialTransform(Transform):
    """A transform that moves voxels; combined with the others into one resampling by ``Augmenter``."""

    def draw(self, rng: np.random.Generator, out_shape: tuple[int, ...]) -> Draw:
        """Random parameters for an output patch of ``out_shape`` voxels (``d = len(out_shape)``)."""
        raise NotImplementedError
