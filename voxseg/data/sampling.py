"""Patch sampling with foreground oversampling, flips, and padding to network size multiples.

Arrays are ``(C, Z, Y, X)`` images and ``(Z, Y, X)`` labels with consecutive class indices (0 is
background). Patch sizes are in voxels ``(pz, py, px)``; for 2-D training use ``(1, py, px)`` and
squeeze axis 1 of the image patch (axis 0 of the label patch).
All randomness comes from a ``numpy.random.Generator`` passed in.

Sampling modes beyond 3-D patches and 2-D slices:

- 2.5-D stacks: ``k`` neighbouring slices as channels, the label of the centre slice
  (:mod:`voxseg.data.network_input`, shared with inference).
- Slice selection (:func:`select_slices`, Wang & Tang (2020)): every slice with foreground plus a set number
  of the nearest slices without; pass the result as ``PatchSampler(..., slices=...)``.
- Minicubes (:func:`minicube_partition`, Buchwald et al. (2022)): a fixed, deterministic partition of the cropped
  volume into cubes, optionally with a context margin around each.
- Modality subsets (Yildiz et al. 2024): a fixed selection of channels by name, applied at training and
  prediction time alike by :mod:`voxseg.data.network_input`.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["PatchSampler", "random_flip", "pad_to_multiple", "select_slices", "minicube_starts",
           "minicube_partition"]


def _normalise_patch_size(patch_size: Sequence[int]) -> tuple[int, int, int]:
    size = tuple(int(p) for p in patch_size)
    if len(size) == 2:  # a 2-D patch is a one-slice 3-D patch
        size = (1,) + size
    if len(size) != 3 or any(p < 1 for p in size):
        raise ValueError(f"patch_size must be (pz, py, px) or (py, px) of positive voxels, got {tuple(patch_size)}")
    return size  # type: ignore[return-value]


def _extract(array: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Copy the window ``[start, start + size)`` of the last three axes; parts outside are 0."""
    lead = array.shape[:-3]
    spatial = array.shape[-3:]
    out = np.zeros(lead + tuple(size), dtype=array.dtype)
    src, dst = [], []
    for s0, n, dim in zip(start, size, spatial):
        a, b = max(s0, 0), min(s0 + n, dim)
        src.append(slice(a, max(a, b)))
        dst.append(slice(a - s0, a - s0 + max(0, b - a)))
    out[(Ellipsis, *dst)] = array[(Ellipsis, *src)]
    return out


class PatchSampler:
    """Draws fixed-size training patches from one case, optionally centred on foreground.

    Foreground voxel coordinates are collected once per class (at most ``max_voxels_per_class``
    of them, subsampled with ``rng``) so that each foreground patch costs O(1) to place.

    Args:
        image: ``(C, Z, Y, X)`` float image.
        label: ``(Z, Y, X)`` consecutive class indices (0 = background), e.g. uint8.
        patch_size: ``(pz, py, px)`` voxels, or ``(py, px)`` meaning ``(1, py, px)``.
        foreground_fraction: share of each batch forced to contain foreground (nnU-Net uses 1/3).
        rng: generator used to subsample coordinates and as the default for sampling.
        max_voxels_per_class: coordinates kept per class.
        slices: optional axis-0 (Z) indices that random (not foreground-forced) patches are centred
            on, e.g. from :func:`select_slices` for 2-D / 2.5-D training. ``None`` = anywhere.
        overhang: how far a patch may reach beyond the volume, as a fraction of the patch size per
            axis (0: patches stay inside; 0.5: patch centres anywhere in the volume). Beyond the volume
            the patch is zero, so a cropped case still shows the network windows at many positions.

    Attributes:
        patch_size: the normalised ``(pz, py, px)``.
        classes: foreground classes present in the label, sorted.
        foreground_coords: per foreground class, the ``(n, 3)`` voxel coordinates that forced-foreground
            patches are centred on (a seeded subsample of at most ``max_voxels_per_class``).
    """

    def __init__(
        self,
        image: np.ndarray,
        label: np.ndarray,
        patch_size: Sequence[int],
        foreground_fraction: float = 1 / 3,
        rng: np.random.Generator | None = None,
        max_voxels_per_class: int = 10_000,
        slices: Sequence[int] | None = None,
        overhang: float = 0.0,
    ):
        image = np.asarray(image)
        label = np.asarray(label)
        if image.ndim != 4:
            raise ValueError(f"expected a (C, Z, Y, X) image, got shape {image.shape}")
        if label.shape != image.shape[1:]:
            raise ValueError(f"label shape {label.shape} != image spatial shape {image.shape[1:]}")
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction}")
        if rng is None:
            raise ValueError("pass rng=np.random.default_rng(seed): sampling is never seeded implicitly")
        if not 0.0 <= overhang <= 0.5:
            raise ValueError(f"overhang must be in [0, 0.5], got {overhang}")
        self.overhang = float(overhang)
        self.image = image
        self.label = label
        self.patch_size = _normalise_patch_size(patch_size)
        self.foreground_fraction = float(foreground_fraction)
        self.rng = rng
        self.foreground_coords: dict[int, np.ndarray] = {}
        # One pass over the label: sort foreground voxel indices by class.
        flat = label.reshape(-1)
        fg = np.flatnonzero(flat)
        if fg.size:
            cls = flat[fg]
            order = np.argsort(cls, kind="stable")
            fg, cls = fg[order], cls[order]
            values, starts = np.unique(cls, return_index=True)
            bounds = list(starts[1:]) + [fg.size]
            for v, a, b in zip(values.tolist(), starts.tolist(), bounds):
                idx = fg[a:b]
                if idx.size > max_voxels_per_class:
                    idx = rng.choice(idx, size=max_voxels_per_class, replace=False)
                self.foreground_coords[int(v)] = np.stack(np.unravel_index(idx, label.shape), axis=1)
        self.classes: list[int] = sorted(self.foreground_coords)
        self.slices = None if slices is None else np.asarray(slices, dtype=np.intp)
        if self.slices is not None and (self.slices.size == 0 or self.slices.min() < 0
                                        or self.slices.max() >= label.shape[0]):
            raise ValueError(f"slices must be non-empty indices in [0, {label.shape[0]}), got {slices}")

    def _start(self, centre: np.ndarray | None, rng: np.random.Generator) -> list[int]:
        starts = []
        for axis, (p, dim) in enumerate(zip(self.patch_size, self.label.shape)):
            # Valid starts keep the patch inside the volume, or (volume smaller than patch) keep the
            # whole volume inside the patch, where the rest is zero padding; overhang widens both ways.
            reach = int(self.overhang * p) if p > 1 else 0
            lo, hi = min(0, dim - p) - reach, max(0, dim - p) + reach
            if centre is None and axis == 0 and self.slices is not None:
                z = int(self.slices[int(rng.integers(len(self.slices)))])
                s = min(max(z - p // 2, lo), hi)
            elif centre is None:
                s = int(rng.integers(lo, hi + 1))
            else:
                # Jitter of up to a quarter patch keeps the voxel well inside; clamping to [lo, hi]
                # cannot push it out (see tests).
                j = p // 4
                s = int(centre[axis]) - p // 2 + int(rng.integers(-j, j + 1))
                s = min(max(s, lo), hi)
            starts.append(s)
        return starts

    def sample(self, force_foreground: bool = False, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Draw one patch.

        Args:
            force_foreground: centre the patch on a voxel of a foreground class chosen uniformly among
                the classes present (so rare classes are seen as often as common ones). Falls back to
                a random patch when the label has no foreground.
            rng: generator; defaults to the sampler's.

        Returns:
            ``(image_patch (C, pz, py, px) float32, label_patch (pz, py, px) label dtype)``; areas
            outside the volume are 0 in both.
        """
        start = self.sample_start(force_foreground, rng)
        img = _extract(self.image, start, self.patch_size).astype(np.float32, copy=False)
        lbl = _extract(self.label, start, self.patch_size)
        return img, lbl

    def sample_start(self, force_foreground: bool = False, rng: np.random.Generator | None = None) -> list[int]:
        """Place one patch without cutting it: its first voxel ``[z0, y0, x0]`` (may be negative).

        Same draws as :meth:`sample`; the patch centre is ``start + (patch_size - 1) / 2``, which is
        what :meth:`voxseg.data.augment.Augmenter.extract` needs.
        """
        rng = self.rng if rng is None else rng
        centre = None
        if force_foreground and self.classes:
            cls = self.classes[int(rng.integers(len(self.classes)))]
            coords = self.foreground_coords[cls]
            centre = coords[int(rng.integers(len(coords)))]
        return self._start(centre, rng)

    def n_foreground(self, batch_size: int) -> int:
        """Forced-foreground patches in a batch: ``round(batch_size * foreground_fraction)`` (half up),
        at least 1 when the fraction is positive and the label has foreground; 0 without foreground."""
        if not self.classes or self.foreground_fraction == 0:
            return 0
        return min(batch_size, max(1, math.floor(batch_size * self.foreground_fraction + 0.5)))

    def sample_batch(self, batch_size: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Draw a batch with foreground oversampling (as nnU-Net does).

        The first :meth:`n_foreground` patches are forced foreground, the rest random.

        Returns:
            ``(images (B, C, pz, py, px) float32, labels (B, pz, py, px))``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        rng = self.rng if rng is None else rng
        n_fg = self.n_foreground(batch_size)
        pairs = [self.sample(i < n_fg, rng) for i in range(batch_size)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def random_flip(
    image: np.ndarray,
    label: np.ndarray | None,
    rng: np.random.Generator,
    axes: Sequence[int] = (0, 1, 2),
    p: float = 0.5,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Flip spatial axes independently, each with probability ``p``, identically in image and label.

    Args:
        image: ``(C, Z, Y, X)`` (or ``(C, *spatial)``).
        label: ``(Z, Y, X)`` (``(*spatial)``) or ``None``.
        rng: generator.
        axes: spatial axes (0 = Z) that may be flipped.
        p: probability per axis.

    Returns:
        Contiguous copies ``(image, label)`` (label ``None`` when given ``None``).
    """
    flip = [a for a in axes if rng.random() < p]
    image = np.ascontiguousarray(np.flip(image, axis=[a + 1 for a in flip]) if flip else image.copy())
    if label is not None:
        label = np.ascontiguousarray(np.flip(label, axis=flip) if flip else label.copy())
    return image, label


def pad_to_multiple(
    array: np.ndarray,
    divisor: int | Sequence[int],
    spatial_dims: int = 3,
    value: float = 0,
) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Pad the last ``spatial_dims`` axes to multiples of ``divisor`` (e.g. a network's size divisor).

    Padding is split evenly (the extra voxel after), so the volume stays centred.

    Args:
        array: ``(..., Z, Y, X)`` (any leading axes, e.g. channels).
        divisor: one int for all spatial axes or one per spatial axis (voxels).
        spatial_dims: how many trailing axes are spatial (3, or 2 for slices).
        value: constant to pad with.

    Returns:
        ``(padded, slices)`` with ``padded[slices]`` equal to ``array`` (slices cover all axes).
    """
    array = np.asarray(array)
    divs = (int(divisor),) * spatial_dims if np.isscalar(divisor) else tuple(int(d) for d in divisor)  # type: ignore[arg-type]
    if len(divs) != spatial_dims or any(d < 1 for d in divs):
        raise ValueError(f"divisor must be a positive int or {spatial_dims} positive ints, got {divisor}")
    lead = array.ndim - spatial_dims
    pads = [(0, 0)] * lead
    slices: list[slice] = [slice(None)] * lead
    for n, d in zip(array.shape[lead:], divs):
        total = (-n) % d
        before = total // 2
        pads.append((before, total - before))
        slices.append(slice(before, before + n))
    if not any(t for _, t in pads) and not any(b for b, _ in pads):
        return array.copy(), tuple(slices)
    return np.pad(array, pads, mode="constant", constant_values=value), tuple(slices)


def select_slices(label: np.ndarray, n_background: int) -> np.ndarray:
    """Slices for 2-D training as in Wang & Tang (2020): all slices with foreground plus nearby empty ones.

    The ``n_background`` slices without foreground nearest to any foreground slice are added
    (ties: lower index first), so training sees the organ and its borders without thousands of
    empty slices. A label without foreground gives the ``n_background`` central slices.

    Args:
        label: ``(Z, Y, X)`` classes (0 = background); slices along axis 0.
        n_background: empty slices to add (capped at the number available).

    Returns:
        Sorted ``int`` indices along Z.
    """
    label = np.asarray(label)
    has_fg = label.reshape(label.shape[0], -1).any(axis=1)
    fg = np.flatnonzero(has_fg)
    bg = np.flatnonzero(~has_fg)
    if fg.size:
        dist = np.abs(bg[:, None] - fg[None, :]).min(axis=1)
    else:
        dist = np.abs(bg - (label.shape[0] - 1) / 2.0)
    order = np.lexsort((bg, dist))  # nearest first, then lower index
    chosen = bg[order[:max(0, int(n_background))]]
    return np.sort(np.concatenate([fg, chosen])).astype(int)


def minicube_starts(shape: Sequence[int], cube: Sequence[int]) -> list[tuple[int, ...]]:
    """First voxels of the cubes tiling ``shape`` (row-major order, last cubes run past the edge)."""
    grids = [range(0, int(n), int(c)) for n, c in zip(shape, cube)]
    return [tuple(int(v) for v in s) for s in np.stack(np.meshgrid(*grids, indexing="ij"), -1).reshape(-1, len(cube))]


def minicube_partition(
    image: np.ndarray,
    label: np.ndarray | None,
    cube: Sequence[int] = (80, 96, 96),
    context: int | Sequence[int] = 0,
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Fixed partition of a (cropped) volume into minicubes, optionally with context (Buchwald et al. 2022).

    Buchwald et al. (2022) split a 160x192x192 crop into eight 80x96x96 cubes and feeds 100x116x116 inputs
    (``context=20``: 10 voxels on each side). The list is deterministic, so that experiment reruns.

    Args:
        image: ``(C, Z, Y, X)``.
        label: ``(Z, Y, X)`` or ``None``.
        cube: core cube size ``(cz, cy, cx)`` voxels; the volume is covered exactly once by cores,
            the last cube along an axis is zero-padded beyond the volume.
        context: extra voxels per axis around each core (total, split ``context // 2`` before and the
            rest after), read from the volume where it exists and 0 beyond.

    Returns:
        ``[(image_cube (C, cz + context, ...), label_cube (cz, cy, cx) or None), ...]`` in
        :func:`minicube_starts` order; the label covers the core only (the region to predict).
    """
    cube = tuple(int(c) for c in cube)
    ctx = (int(context),) * 3 if np.isscalar(context) else tuple(int(c) for c in context)  # type: ignore[arg-type]
    if len(cube) != 3 or any(c < 1 for c in cube) or len(ctx) != 3 or any(c < 0 for c in ctx):
        raise ValueError(f"cube must be 3 positive ints and context non-negative, got {cube}, {context}")
    out = []
    for start in minicube_starts(image.shape[1:], cube):
        before = [s - c // 2 for s, c in zip(start, ctx)]
        img = _extract(image, before, [n + c for n, c in zip(cube, ctx)])
        lbl = None if label is None else _extract(label, start, cube)
        out.append((img, lbl))
    return out
