"""Dataset fingerprint: the voxel spacings and shapes a run was trained on, saved as ``fingerprint.json`` in
the run folder, so that prediction can say when a scan lies outside them.

A run that does not resample (no ``--spacing``) feeds every scan to the network at its own voxel size: a
scan at 1 mm given to a network trained at 1.5 mm shows it anatomy a third larger than it learned, and the
labels degrade without any error. The fingerprint makes that a stated warning instead.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from voxseg.io.files import save_json_atomic

__all__ = ["FINGERPRINT_NAME", "SPACING_TOLERANCE", "DatasetFingerprint", "dataset_fingerprint"]

FINGERPRINT_NAME = "fingerprint.json"
SPACING_TOLERANCE = 1.25  # a spacing within [min / 1.25, max * 1.25] of the training cases' counts as seen


@dataclass
class DatasetFingerprint:
    """Spacings and shapes of a run's training cases, as read from their headers.

    Attributes:
        n_cases: number of cases.
        spacing_min / spacing_median / spacing_max: ``(sz, sy, sx)`` in mm over the cases, per axis.
        shape_min / shape_median / shape_max: ``(Z, Y, X)`` in voxels (before cropping), per axis.
    """

    n_cases: int
    spacing_min: list[float]
    spacing_median: list[float]
    spacing_max: list[float]
    shape_min: list[int]
    shape_median: list[int]
    shape_max: list[int]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DatasetFingerprint":
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})

    def save(self, run_dir: str | Path) -> Path:
        """Write ``run_dir/fingerprint.json`` atomically (temporary name, then rename)."""
        return save_json_atomic(self.to_dict(), Path(run_dir) / FINGERPRINT_NAME)

    @classmethod
    def load(cls, run_dir: str | Path) -> "DatasetFingerprint | None":
        """The fingerprint of a run folder (or of the cross-validation run a fold folder belongs to);
        ``None`` for runs made before fingerprints were saved."""
        for folder in (Path(run_dir), Path(run_dir).parent):
            path = folder / FINGERPRINT_NAME
            if path.exists():
                return cls.from_dict(json.loads(path.read_text()))
        return None

    def spacing_problem(self, spacing: Sequence[float]) -> str | None:
        """Why ``spacing`` ``(sz, sy, sx)`` (mm) lies outside the training cases' range, or ``None``."""
        outside = [axis for axis, s, lo, hi in zip("zyx", spacing, self.spacing_min, self.spacing_max)
                   if not lo / SPACING_TOLERANCE <= s <= hi * SPACING_TOLERANCE]
        if not outside:
            return None

        def span(lo: float, hi: float) -> str:
            return f"{lo:.3g}" if abs(hi - lo) < 1e-6 else f"{lo:.3g}-{hi:.3g}"

        seen = " x ".join(span(lo, hi) for lo, hi in zip(self.spacing_min, self.spacing_max))
        return (f"voxel spacing {' x '.join(f'{s:.3g}' for s in spacing)} mm (Z x Y x X) is outside the training "
                f"cases' {seen} mm along {', '.join(outside)}, and the run does not resample: the network sees "
                f"the anatomy at another scale (train with --spacing to make a run resample every scan)")


def dataset_fingerprint(spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]]) -> DatasetFingerprint:
    """Fingerprint of cases with these ``(sz, sy, sx)`` spacings (mm) and ``(Z, Y, X)`` shapes (voxels)."""
    if not len(spacings) or len(spacings) != len(shapes):
        raise ValueError("need one spacing and one shape per case, at least one case")
    sp, sh = np.asarray(spacings, dtype=np.float64), np.asarray(shapes, dtype=np.int64)
    return DatasetFingerprint(
        n_cases=len(sp),
        spacing_min=[round(float(v), 6) for v in sp.min(0)],
        spacing_median=[round(float(v), 6) for v in np.median(sp, 0)],
        spacing_max=[round(float(v), 6) for v in sp.max(0)],
        shape_min=[int(v) for v in sh.min(0)],
        shape_median=[int(round(float(v))) for v in np.median(sh, 0)],
        shape_max=[int(v) for v in sh.max(0)],
    )
