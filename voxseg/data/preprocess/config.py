"""Typed settings for preprocessing every case of a dataset (saved in plan.json)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voxseg.data.enhance import DENOISERS
from voxseg.data.orientation import check_orientation_code
from voxseg.data.preprocess.normalize import NORMALIZATIONS

__all__ = ["PreprocessConfig"]


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
            :func:`voxseg.data.enhance.n4_bias_correction`. None (off here; ``voxseg train`` plans it). MRI only (needs
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
    n4: bool | None = None
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
        self.n4 = None if self.n4 is None else bool(self.n4)
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
