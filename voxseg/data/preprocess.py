"""Per-case preprocessing: bring the voxel axes to the run's orientation, crop to the nonzero region,
normalise intensities, resample to a target spacing.

Everything here works on arrays: images are ``(C, Z, Y, X)`` float32, labels ``(Z, Y, X)`` integers,
spacings ``(sz, sy, sx)`` in mm. Each step records what it did in a :class:`PreprocessRecord` so that
:func:`restore_to_original` can put a prediction back on the original voxel grid.

Resampling convention: voxels are cells, and output voxel ``j`` of an axis resampled from ``n_in`` to
``n_out`` voxels samples the input at index ``(j + 0.5) * n_in / n_out - 0.5`` (the "align corners =
False" convention of PyTorch, ``scipy.ndimage.zoom(grid_mode=True)`` and SimpleITK resampling to the
same physical extent), clamped to the edge voxels. The target shape is exactly
``round(shape * spacing / target_spacing)``, and restoring uses the same mapping in reverse, so shapes
always round-trip exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from voxseg.data.enhance import DENOISERS, enhance_image
from voxseg.data.orientation import check_orientation_code, reorient, reoriented_spacing
from voxseg.io.image import orientation_code

__all__ = [
    "NORMALIZATIONS",
    "PreprocessConfig",
    "LabelMapping",
    "PreprocessRecord",
    "PreprocessedCase",
    "preprocess_case",
    "restore_to_original",
    "foreground_intensity_statistics",
    "resample_probabilities",
    "resample_image",
    "resample_label",
    "nonzero_bbox",
    "normalize_image",
]

BBox = list[tuple[int, int]]


# ----------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------


@dataclass
class PreprocessConfig:
    """How to preprocess every case of a dataset.

    Attributes:
        normalization: one of :data:`NORMALIZATIONS`:
            ``"zscore"`` (default, MRI): per channel, subtract the mean and divide by the standard
            deviation of the voxels inside the nonzero mask (voxels nonzero in any channel); voxels
            outside the mask stay exactly 0.
            ``"percentile"``: per channel, clip to the ``percentile_low``/``percentile_high``
            percentiles of the (cropped) channel, then scale min-max to ``[0, 1]``.
            ``"ct"``: clip to ``ct_window`` (HU), then subtract ``ct_mean`` and divide by ``ct_std`` (the
            training foreground's, as nnU-Net does, see :func:`foreground_intensity_statistics`; without
            them, the clipped channel's own mean and std).
            ``"none"``: leave intensities as they are.
        percentile_low: lower percentile (0-100) for ``"percentile"``; default 0.5.
        percentile_high: upper percentile (0-100) for ``"percentile"``; default 99.5.
        ct_window: ``(lo, hi)`` clipping window in HU for ``"ct"``; ``voxseg train`` derives it from the
            training cases' foreground (0.5th and 99.5th percentiles) when it is not given.
        ct_mean / ct_std: HU mean and standard deviation of the training foreground for ``"ct"``.
        target_spacing: ``(sz, sy, sx)`` in mm to resample to; ``None`` keeps the original grid.
        crop_to_nonzero: crop to the bounding box of voxels nonzero in any channel (skull-stripped MRI);
            turn off for CT, where air is -1000 and not 0.
        n4: N4 bias-field correction (Tustison et al. 2010) of each enhanced channel, see
            :func:`voxseg.data.enhance.n4_bias_correction`. Off by default. MRI only (needs
            intensities >= 0).
        n4_shrink: shrink factor per axis for the N4 fit (the field is applied at full resolution).
        n4_iterations: maximum N4 iterations per fitting level; its length is the number of levels.
        n4_convergence: N4 convergence threshold per level.
        denoise: anisotropic diffusion: ``None`` (off, default), ``"gradient"`` (Perona-Malik) or
            ``"curvature"`` (modified curvature), see :func:`voxseg.data.enhance.anisotropic_diffusion`.
        denoise_iterations: diffusion steps.
        denoise_conductance: edge threshold relative to the mean gradient magnitude (lower keeps
            more edges).
        denoise_time_step: step per iteration; ``None`` = the stability limit for the case's
            spacing, ``min(spacing) / 2**(3 + 1)`` (0.0625 at 1 mm).
        enhance_channels: channel indices that N4/diffusion apply to; ``None`` = all channels.
        orientation: axis codes (e.g. ``"RAS"``, see :mod:`voxseg.data.orientation`) every case is flipped
            and permuted to before anything else (exactly, no interpolation); ``None`` keeps each file's
            own voxel order. New runs take the orientation most of their training cases are stored in.

    Enhancement runs on the original voxel grid (with the case's spacing) before normalisation and
    resampling, on the crop to the nonzero region (same grid, fewer voxels); background voxels stay 0.
    """

    normalization: str = "zscore"
    percentile_low: float = 0.5
    percentile_high: float = 99.5
    ct_window: tuple[float, float] | None = None
    target_spacing: tuple[float, float, float] | None = None
    crop_to_nonzero: bool = True
    n4: bool = False
    n4_shrink: int = 4
    n4_iterations: tuple[int, ...] = (50, 50, 30, 20)
    n4_convergence: float = 0.001
    denoise: str | None = None
    denoise_iterations: int = 5
    denoise_conductance: float = 1.0
    denoise_time_step: float | None = None
    enhance_channels: tuple[int, ...] | None = None
    orientation: str | None = None
    ct_mean: float | None = None
    ct_std: float | None = None

    def __post_init__(self) -> None:
        # Normalise JSON lists to tuples so from_dict(to_dict()) compares equal.
        self.n4 = bool(self.n4)
        self.n4_shrink = int(self.n4_shrink)
        self.n4_iterations = tuple(int(v) for v in self.n4_iterations)
        self.n4_convergence = float(self.n4_convergence)
        self.denoise_iterations = int(self.denoise_iterations)
        self.denoise_conductance = float(self.denoise_conductance)
        if self.denoise_time_step is not None:
            self.denoise_time_step = float(self.denoise_time_step)
        if self.enhance_channels is not None:
            self.enhance_channels = tuple(int(v) for v in self.enhance_channels)
        if self.n4_shrink < 1 or not self.n4_iterations or any(v < 1 for v in self.n4_iterations):
            raise ValueError(
                f"n4 needs shrink >= 1 and positive iterations per level, got {self.n4_shrink}, {self.n4_iterations}"
            )
        if not self.n4_convergence > 0:
            raise ValueError(f"n4_convergence must be > 0, got {self.n4_convergence}")
        if self.denoise is not None and self.denoise not in DENOISERS:
            raise ValueError(f"unknown denoise {self.denoise!r}; choose None or one of {sorted(DENOISERS)}")
        if self.denoise_iterations < 1 or not self.denoise_conductance > 0:
            raise ValueError(
                f"denoise needs iterations >= 1 and conductance > 0, got {self.denoise_iterations}, "
                f"{self.denoise_conductance}"
            )
        if self.denoise_time_step is not None and not self.denoise_time_step > 0:
            raise ValueError(f"denoise_time_step must be > 0 or None, got {self.denoise_time_step}")
        if self.enhance_channels is not None and any(c < 0 for c in self.enhance_channels):
            raise ValueError(f"enhance_channels must be channel indices >= 0, got {self.enhance_channels}")
        if self.orientation is not None:
            self.orientation = check_orientation_code(self.orientation)
        if self.ct_window is not None:
            self.ct_window = tuple(float(v) for v in self.ct_window)  # type: ignore[assignment]
        if self.target_spacing is not None:
            self.target_spacing = tuple(float(v) for v in self.target_spacing)  # type: ignore[assignment]
        self.percentile_low = float(self.percentile_low)
        self.percentile_high = float(self.percentile_high)
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {self.normalization!r}; choose one of {sorted(NORMALIZATIONS)}")
        if not 0.0 <= self.percentile_low < self.percentile_high <= 100.0:
            raise ValueError(
                f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentile_low}, {self.percentile_high}"
            )
        if self.ct_mean is not None:
            self.ct_mean = float(self.ct_mean)
        if self.ct_std is not None:
            self.ct_std = float(self.ct_std)
            if not self.ct_std > 0:
                raise ValueError(f"ct_std must be > 0, got {self.ct_std}")
        if self.ct_window is not None and (len(self.ct_window) != 2 or not self.ct_window[0] < self.ct_window[1]):
            raise ValueError(f"ct_window must be (lo, hi) with lo < hi, got {self.ct_window}")
        if self.target_spacing is not None and (
            len(self.target_spacing) != 3 or any(not s > 0 for s in self.target_spacing)
        ):
            raise ValueError(f"target_spacing must be three positive mm values (sz, sy, sx), got {self.target_spacing}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        return {
            "normalization": self.normalization,
            "percentile_low": self.percentile_low,
            "percentile_high": self.percentile_high,
            "ct_window": None if self.ct_window is None else list(self.ct_window),
            "target_spacing": None if self.target_spacing is None else list(self.target_spacing),
            "crop_to_nonzero": bool(self.crop_to_nonzero),
            "n4": self.n4,
            "n4_shrink": self.n4_shrink,
            "n4_iterations": list(self.n4_iterations),
            "n4_convergence": self.n4_convergence,
            "denoise": self.denoise,
            "denoise_iterations": self.denoise_iterations,
            "denoise_conductance": self.denoise_conductance,
            "denoise_time_step": self.denoise_time_step,
            "enhance_channels": None if self.enhance_channels is None else list(self.enhance_channels),
            # Only when set: the cache stamps of runs made before these fields existed stay valid.
            **({"orientation": self.orientation} if self.orientation else {}),
            **({"ct_mean": self.ct_mean} if self.ct_mean is not None else {}),
            **({"ct_std": self.ct_std} if self.ct_std is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError``; missing keys take their
        defaults (plans written before a field existed load with that step off)."""
        return cls(**data)


# ----------------------------------------------------------------------------------------------------
# Label mapping
# ----------------------------------------------------------------------------------------------------


class LabelMapping:
    """Bijection between a dataset's original label values and consecutive class indices ``0..K-1``.

    Networks need consecutive classes; BraTS labels are ``0, 1, 2, 4``. ``LabelMapping([0, 1, 2, 4])``
    maps ``0->0, 1->1, 2->2, 4->3`` and back. Background ``0`` is always included (added if missing).

    Args:
        values: original label values (any order, duplicates ignored).
    """

    def __init__(self, values: Iterable[int]):
        vals = sorted({int(v) for v in values} | {0})
        if len(vals) > 256:
            raise ValueError(f"at most 256 classes fit in uint8, got {len(vals)}")
        self.values: list[int] = vals
        self._values_arr = np.asarray(vals, dtype=np.int64)

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelMapping) and self.values == other.values

    def __repr__(self) -> str:
        return f"LabelMapping({self.values})"

    def to_consecutive(self, label: np.ndarray) -> np.ndarray:
        """Original values -> class indices.

        Args:
            label: integer array of any shape (float arrays with integer values are accepted).

        Returns:
            ``uint8`` array of the same shape with values in ``0..num_classes-1``.

        Raises:
            ValueError: the label holds values not in :attr:`values` (listed in the message).
        """
        arr = np.asarray(label)
        flat = _as_int64(arr)
        idx = np.searchsorted(self._values_arr, flat)
        idx_c = np.minimum(idx, len(self.values) - 1)
        bad = self._values_arr[idx_c] != flat
        if bad.any():
            unknown = np.unique(flat[bad]).tolist()
            raise ValueError(f"label values {unknown} are not in the label mapping {self.values}")
        return idx_c.astype(np.uint8)

    def to_original(self, label: np.ndarray) -> np.ndarray:
        """Class indices -> original values (exact inverse of :meth:`to_consecutive`).

        Returns:
            Array of the same shape; ``uint8`` when all original values fit, otherwise ``int32``.

        Raises:
            ValueError: indices outside ``0..num_classes-1`` (listed in the message).
        """
        flat = _as_int64(np.asarray(label))
        bad = (flat < 0) | (flat >= self.num_classes)
        if bad.any():
            unknown = np.unique(flat[bad]).tolist()
            raise ValueError(f"class indices {unknown} are outside 0..{self.num_classes - 1} of {self.values}")
        fits_u8 = self.values[0] >= 0 and self.values[-1] <= 255
        return self._values_arr[flat].astype(np.uint8 if fits_u8 else np.int32)

    @classmethod
    def from_arrays(cls, labels: np.ndarray | Iterable[np.ndarray]) -> "LabelMapping":
        """Mapping of every value present in one label array or an iterable of them."""
        if isinstance(labels, np.ndarray):
            labels = [labels]
        values: set[int] = set()
        for lab in labels:
            values.update(np.unique(_as_int64(np.asarray(lab))).tolist())
        return cls(values)

    def to_dict(self) -> dict[str, Any]:
        """``{"values": [...]}``."""
        return {"values": list(self.values)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LabelMapping":
        """Inverse of :meth:`to_dict`."""
        return cls(data["values"])


def _as_int64(arr: np.ndarray) -> np.ndarray:
    """Integer view of a label array; float labels must hold integer values (some MSD labels are float32)."""
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64, copy=False)
    as_int = np.rint(arr).astype(np.int64)
    if not np.array_equal(as_int, arr):
        raise ValueError("label array holds non-integer values")
    return as_int


# ----------------------------------------------------------------------------------------------------
# Record of what preprocessing did
# ----------------------------------------------------------------------------------------------------


@dataclass
class PreprocessRecord:
    """What :func:`preprocess_case` did to one case (JSON-able; enough to undo crop and resampling).

    Attributes:
        original_shape: ``(Z, Y, X)`` voxels before cropping.
        crop_bbox: ``[(start, stop)] * 3`` voxel slices of the crop in the original grid (Z, Y, X).
        original_spacing: ``(sz, sy, sx)`` mm of the input.
        resampled_spacing: ``(sz, sy, sx)`` mm after resampling (the target spacing, or the original
            when not resampled). The effective spacing differs from it by the rounding of the shape.
        cropped_shape: ``(Z, Y, X)`` voxels after cropping.
        resampled_shape: ``(Z, Y, X)`` voxels after resampling (the shape the network sees).
        label_voxels_outside_crop: nonzero label voxels that fell outside the crop and were lost
            (should be 0; nonzero flags a label that extends beyond the image's nonzero region).
        reoriented: ``(input's axis codes, run's axis codes)`` when the case was flipped / permuted
            first (then ``original_shape``, ``crop_bbox`` and ``original_spacing`` are in the run's
            orientation); ``None`` when its voxel order was kept.
    """

    original_shape: tuple[int, int, int]
    crop_bbox: list[tuple[int, int]]
    original_spacing: tuple[float, float, float]
    resampled_spacing: tuple[float, float, float]
    cropped_shape: tuple[int, int, int]
    resampled_shape: tuple[int, int, int]
    label_voxels_outside_crop: int = 0
    reoriented: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        self.original_shape = tuple(int(v) for v in self.original_shape)  # type: ignore[assignment]
        self.crop_bbox = [(int(a), int(b)) for a, b in self.crop_bbox]
        self.original_spacing = tuple(float(v) for v in self.original_spacing)  # type: ignore[assignment]
        self.resampled_spacing = tuple(float(v) for v in self.resampled_spacing)  # type: ignore[assignment]
        self.cropped_shape = tuple(int(v) for v in self.cropped_shape)  # type: ignore[assignment]
        self.resampled_shape = tuple(int(v) for v in self.resampled_shape)  # type: ignore[assignment]
        self.label_voxels_outside_crop = int(self.label_voxels_outside_crop)
        if self.reoriented is not None:
            self.reoriented = (str(self.reoriented[0]), str(self.reoriented[1]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        return {
            "original_shape": list(self.original_shape),
            "crop_bbox": [list(b) for b in self.crop_bbox],
            "original_spacing": list(self.original_spacing),
            "resampled_spacing": list(self.resampled_spacing),
            "cropped_shape": list(self.cropped_shape),
            "resampled_shape": list(self.resampled_shape),
            "label_voxels_outside_crop": self.label_voxels_outside_crop,
            "reoriented": None if self.reoriented is None else list(self.reoriented),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessRecord":
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


@dataclass
class PreprocessedCase:
    """Output of :func:`preprocess_case`.

    Attributes:
        image: ``(C, Z', Y', X')`` float32, normalised, on the target grid.
        label: ``(Z', Y', X')`` with the input label's dtype and values, or ``None``.
        record: how to undo cropping and resampling.
    """

    image: np.ndarray
    label: np.ndarray | None
    record: PreprocessRecord = field(repr=False)


# ----------------------------------------------------------------------------------------------------
# Cropping
# ----------------------------------------------------------------------------------------------------


def nonzero_bbox(image: np.ndarray) -> BBox:
    """Bounding box of the voxels nonzero in any channel.

    Args:
        image: ``(C, Z, Y, X)`` or ``(Z, Y, X)``.

    Returns:
        ``[(z0, z1), (y0, y1), (x0, x1)]`` half-open voxel ranges; the whole volume when all voxels are 0.
    """
    mask = _nonzero_mask(image)
    shape = mask.shape
    bbox: BBox = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return [(0, s) for s in shape]
        bbox.append((int(hits[0]), int(hits[-1]) + 1))
    return bbox


def _nonzero_mask(image: np.ndarray) -> np.ndarray:
    return (image != 0).any(axis=0) if image.ndim == 4 else image != 0


def _bbox_slices(bbox: BBox) -> tuple[slice, slice, slice]:
    return tuple(slice(a, b) for a, b in bbox)  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------
# Normalisation (a registry: adding a scheme is one function and one line)
# ----------------------------------------------------------------------------------------------------


def _norm_zscore(channel: np.ndarray, mask: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    # Statistics over the brain only: background zeros would dominate mean and std otherwise.
    out = np.zeros_like(channel, dtype=np.float32)
    if not mask.any():
        return out
    values = channel[mask].astype(np.float64)
    mean, std = values.mean(), values.std()
    out[mask] = ((values - mean) / max(std, 1e-8)).astype(np.float32)
    return out


def _norm_percentile(channel: np.ndarray, mask: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    lo, hi = np.percentile(channel, [config.percentile_low, config.percentile_high])
    if hi <= lo:
        return np.zeros_like(channel, dtype=np.float32)
    clipped = np.clip(channel.astype(np.float64), lo, hi)
    return ((clipped - lo) / (hi - lo)).astype(np.float32)


def _norm_ct(channel: np.ndarray, mask: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    if config.ct_window is None:
        raise ValueError("normalization 'ct' needs ct_window=(lo, hi) in HU (voxseg train derives it from the "
                         "training cases, see foreground_intensity_statistics)")
    lo, hi = config.ct_window
    clipped = np.clip(channel.astype(np.float64), lo, hi)
    if config.ct_mean is not None and config.ct_std is not None:  # the dataset's foreground (nnU-Net)
        return ((clipped - config.ct_mean) / config.ct_std).astype(np.float32)
    return ((clipped - clipped.mean()) / max(clipped.std(), 1e-8)).astype(np.float32)


def foreground_intensity_statistics(cases: Iterable[tuple[np.ndarray, np.ndarray]], samples_per_case: int = 10_000,
                                    seed: int = 0) -> dict[str, float]:
    """Intensity statistics of the labelled voxels of a dataset, as nnU-Net's fingerprint takes them for CT.

    Up to ``samples_per_case`` foreground voxels (label > 0) are drawn per case (seeded, without
    replacement), from every channel, and pooled.

    Args:
        cases: ``(image (C, Z, Y, X), label (Z, Y, X))`` pairs.

    Returns:
        ``{"p00_5", "p99_5", "mean", "std", "n"}``: the 0.5th and 99.5th percentiles, mean and standard
        deviation of the pooled values (image units, HU for CT), and how many there were.

    Raises:
        ValueError: no case has a foreground voxel.
    """
    rng = np.random.default_rng(seed)
    pooled = []
    for image, label in cases:
        values = np.asarray(image)[:, np.asarray(label) > 0].ravel()
        if values.size > samples_per_case:
            values = rng.choice(values, samples_per_case, replace=False)
        pooled.append(values.astype(np.float64))
    values = np.concatenate(pooled) if pooled else np.empty(0)
    if values.size == 0:
        raise ValueError("no foreground voxel (label > 0) in any case: no intensity statistics")
    p00_5, p99_5 = np.percentile(values, [0.5, 99.5])
    return {"p00_5": float(p00_5), "p99_5": float(p99_5), "mean": float(values.mean()),
            "std": float(max(values.std(), 1e-8)), "n": int(values.size)}


def _norm_none(channel: np.ndarray, mask: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    return channel.astype(np.float32, copy=True)


#: Normalisation schemes by name: ``fn(channel (Z, Y, X), nonzero mask (Z, Y, X), config) -> float32``.
NORMALIZATIONS: dict[str, Callable[[np.ndarray, np.ndarray, PreprocessConfig], np.ndarray]] = {
    "zscore": _norm_zscore,
    "percentile": _norm_percentile,
    "ct": _norm_ct,
    "none": _norm_none,
}


def normalize_image(image: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Normalise each channel of ``image`` with ``config.normalization``.

    The mask for ``"zscore"`` is the voxels nonzero in *any* channel (one brain mask for all
    channels, as nnU-Net does), so a voxel that is legitimately 0 in one sequence still counts.

    Args:
        image: ``(C, Z, Y, X)``.
        config: the normalisation settings.

    Returns:
        ``(C, Z, Y, X)`` float32.
    """
    if image.ndim != 4:
        raise ValueError(f"expected a (C, Z, Y, X) image, got shape {image.shape}")
    fn = NORMALIZATIONS[config.normalization]
    mask = _nonzero_mask(image)
    return np.stack([fn(ch, mask, config) for ch in image]).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------------
# Resampling
# ----------------------------------------------------------------------------------------------------


def _target_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, int, int]:
    # max(1, .) so a thin slab never vanishes.
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))  # type: ignore[return-value]


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour indices and linear weights for resampling one axis (cell-centre convention)."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = (src - i0).astype(np.float32)
    return i0, i1, w


def _resample_linear(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Separable linear resampling of the last ``len(shape)`` axes to exactly ``shape`` (float32).

    Separable 1-D passes are exact for trilinear interpolation, handle anisotropic grids without
    special cases, need no coordinate grid in memory, and skip axes whose size does not change
    (so the result is bit-identical to the input when ``shape`` equals the input shape).
    """
    out = np.asarray(array, dtype=np.float32)
    lead = out.ndim - len(shape)
    for k, n_out in enumerate(shape):
        axis = lead + k
        n_in = out.shape[axis]
        if n_in == n_out:
            continue
        i0, i1, w = _axis_weights(n_in, int(n_out))
        bshape = [1] * out.ndim
        bshape[axis] = -1
        w = w.reshape(bshape)
        a = np.take(out, i0, axis=axis)
        b = np.take(out, i1, axis=axis)
        out = a + (b - a) * w
    return np.ascontiguousarray(out, dtype=np.float32)


def resample_image(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resample a ``(C, Z, Y, X)`` image to spatial ``shape`` with linear interpolation.

    Linear rather than 3rd-order spline on purpose: after cropping and z-scoring the brain edge is a
    step from ~-1.5 to exactly 0, where a cubic spline overshoots and rings (halos of negative values
    outside the brain, values beyond a CT window); linear interpolation never leaves the range of
    its neighbours, is separable (so anisotropic spacing needs no special case) and is several times
    faster. The loss of sharpness is negligible at the near-median target spacings used in practice.

    Args:
        image: ``(C, Z, Y, X)``.
        shape: target ``(Z', Y', X')`` in voxels.

    Returns:
        ``(C, Z', Y', X')`` float32.
    """
    return _resample_linear(image, tuple(shape))


def resample_label(label: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resample a ``(Z, Y, X)`` label map to ``shape`` by linear interpolation of each class's
    one-hot mask followed by argmax (smoother boundaries than nearest neighbour, no lost thin parts
    at upsampling). Works for any integer values (e.g. BraTS 0/1/2/4); keeps the dtype.
    Identical to the input when ``shape`` equals its shape.
    """
    label = np.asarray(label)
    if tuple(label.shape) == tuple(shape):
        return label.copy()
    values = np.unique(label)
    best = np.full(tuple(shape), -1.0, dtype=np.float32)
    out = np.zeros(tuple(shape), dtype=label.dtype)
    # One class at a time keeps memory at two float volumes regardless of the number of classes.
    for v in values:
        prob = _resample_linear((label == v).astype(np.float32), tuple(shape))
        take = prob > best
        best[take] = prob[take]
        out[take] = v
    return out


def resample_probabilities(probs: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resample class probabilities ``(C, Z, Y, X)`` to spatial ``shape`` linearly.

    Linear interpolation is a convex combination, so per-voxel sums of 1 (softmax) stay 1 and values
    stay in ``[0, 1]``.

    Returns:
        ``(C, Z', Y', X')`` float32.
    """
    probs = np.asarray(probs)
    if probs.ndim != len(shape) + 1:
        raise ValueError(f"expected (C, *spatial) probabilities for spatial shape {tuple(shape)}, got {probs.shape}")
    return _resample_linear(probs, tuple(shape))


# ----------------------------------------------------------------------------------------------------
# Whole case
# ----------------------------------------------------------------------------------------------------


def preprocess_case(
    image: np.ndarray,
    spacing: Sequence[float],
    config: PreprocessConfig,
    label: np.ndarray | None = None,
    affine: np.ndarray | None = None,
) -> PreprocessedCase:
    """Reorient (``config.orientation``), crop, enhance (optional N4 / diffusion), normalise and resample one
    case (in that order: statistics are taken before interpolation blurs the background edge into the brain).

    Args:
        image: ``(C, Z, Y, X)`` intensities.
        spacing: ``(sz, sy, sx)`` in mm.
        config: preprocessing settings.
        label: optional ``(Z, Y, X)`` integer label (original or consecutive values; kept as given).
        affine: the file's 4x4 voxel-to-world affine (NIfTI ``(i, j, k)`` voxel axes); needed when
            ``config.orientation`` is set, to know how the voxels are stored.

    Returns:
        :class:`PreprocessedCase` with image ``(C, Z', Y', X')`` float32, label ``(Z', Y', X')`` (input
        dtype) and the record. Label voxels outside the nonzero crop are lost; their count is in
        ``record.label_voxels_outside_crop``.
    """
    image = np.asarray(image)
    if image.ndim != 4:
        raise ValueError(f"expected a (C, Z, Y, X) image, got shape {image.shape}")
    spatial = tuple(int(s) for s in image.shape[1:])
    if label is not None:
        label = np.asarray(label)
        if tuple(label.shape) != spatial:
            raise ValueError(f"label shape {label.shape} != image spatial shape {spatial}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or any(not s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive mm values (sz, sy, sx), got {spacing}")
    reoriented = None
    if config.orientation is not None:
        if affine is None:
            raise ValueError(f"orientation {config.orientation} needs the case's affine")
        source = orientation_code(affine)
        if source is not None and source != config.orientation:
            reoriented = (source, config.orientation)
            image = reorient(image, *reoriented, channel_first=True)
            label = None if label is None else reorient(label, *reoriented)
            spacing = reoriented_spacing(spacing, *reoriented)
            spatial = tuple(int(s) for s in image.shape[1:])

    bbox = nonzero_bbox(image) if config.crop_to_nonzero else [(0, s) for s in spatial]
    sl = _bbox_slices(bbox)
    cropped = image[(slice(None),) + sl]
    lost = 0
    if label is not None:
        lost = int(np.count_nonzero(label)) - int(np.count_nonzero(label[sl]))
        label = label[sl]

    if config.n4 or config.denoise is not None:
        # Same voxel grid as the original (cropping does not resample), so spacings are unchanged.
        cropped = enhance_image(cropped, spacing, config)
    normed = normalize_image(cropped, config)

    cropped_shape = tuple(int(s) for s in cropped.shape[1:])
    if config.target_spacing is None:
        new_spacing, new_shape = spacing, cropped_shape
    else:
        new_spacing = config.target_spacing
        new_shape = _target_shape(cropped_shape, spacing, new_spacing)
    out_image = resample_image(normed, new_shape)
    out_label = None if label is None else resample_label(label, new_shape)

    record = PreprocessRecord(
        original_shape=spatial,
        crop_bbox=bbox,
        original_spacing=spacing,
        resampled_spacing=new_spacing,
        cropped_shape=cropped_shape,
        resampled_shape=new_shape,
        label_voxels_outside_crop=lost,
        reoriented=reoriented,
    )
    return PreprocessedCase(out_image, out_label, record)


def restore_to_original(
    array: np.ndarray,
    record: PreprocessRecord,
    is_label: bool,
    background_channel: int | None = 0,
) -> np.ndarray:
    """Undo resampling, cropping and reorientation: put a prediction back on the original voxel grid.

    Args:
        array: a label ``(Z', Y', X')`` (``is_label=True``) or probabilities ``(C, Z', Y', X')``
            (``is_label=False``) in preprocessed space, i.e. of spatial shape ``record.resampled_shape``.
        record: from :func:`preprocess_case`.
        is_label: label map (one-hot linear + argmax resampling) or probabilities (linear).
        background_channel: probabilities only: the channel set to 1 outside the crop (all other
            channels are 0 there); ``None`` for sigmoid/region outputs, where every channel is 0
            outside the crop.

    Returns:
        Label ``(Z, Y, X)`` (input dtype; 0 outside the crop) or probabilities ``(C, Z, Y, X)`` float32
        in the input's voxel order and shape. Without resampling the crop region is copied bit for bit.
    """
    array = np.asarray(array)
    expected = tuple(record.resampled_shape)
    if tuple(array.shape[-3:]) != expected or array.ndim != (3 if is_label else 4):
        kind = "(Z, Y, X) label" if is_label else "(C, Z, Y, X) probabilities"
        raise ValueError(f"expected {kind} of spatial shape {expected}, got {array.shape}")
    sl = _bbox_slices(record.crop_bbox)
    if is_label:
        restored = resample_label(array, record.cropped_shape)
        out = np.zeros(record.original_shape, dtype=array.dtype)
        out[sl] = restored
    else:
        restored = resample_probabilities(array, record.cropped_shape)
        out = np.zeros((array.shape[0],) + tuple(record.original_shape), dtype=np.float32)
        if background_channel is not None:
            out[background_channel] = 1.0
        out[(slice(None),) + sl] = restored
    if record.reoriented is not None:  # back to the input's voxel order (a view made contiguous)
        source, target = record.reoriented
        out = np.ascontiguousarray(reorient(out, target, source, channel_first=not is_label))
    return out
