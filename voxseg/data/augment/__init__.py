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

Modules:
    ``base``: :class:`Transform`, :class:`SpatialTransform`, the registry :data:`TRANSFORMS`.
    ``spatial``: flips, rot90, rotation, scaling, elastic deformation.
    ``intensity``: noise, blur, gamma, scale / shift, sharpen, bias field, low resolution, channel drop.
    ``resample``: the single resampling of a patch (slicing, or linear / nearest interpolation).
    ``chain``: :class:`AugmentConfig`, :class:`Augmenter`, :func:`build_augmentation`.

Adding a transform: one frozen dataclass subclass with ``@register`` (in ``spatial`` or ``intensity``)
and one field in :class:`AugmentConfig` (its position is its place in the chain).
"""
from voxseg.data.augment.base import TRANSFORMS, SpatialTransform, Transform, register
from voxseg.data.augment.spatial import Elastic, Flip, Rot90, Rotation, Scaling
from voxseg.data.augment.intensity import (BiasField, ChannelDrop, Gamma, GaussianBlur, GaussianNoise, IntensityScale,
                                           IntensityShift, LowResolution, Sharpen)
from voxseg.data.augment.chain import AugmentConfig, Augmenter, build_augmentation

__all__ = [
    "TRANSFORMS",
    "Transform",
    "SpatialTransform",
    "register",
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
