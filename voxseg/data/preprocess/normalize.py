"""Intensity normalisation: a registry of schemes by name (adding one is one function and one line), and the
dataset's foreground intensity statistics that CT normalisation uses."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from voxseg.data.preprocess.crop import nonzero_mask

if TYPE_CHECKING:  # only for annotations; the config module imports this one
    from voxseg.data.preprocess.config import PreprocessConfig

__all__ = ["NORMALIZATIONS", "foreground_intensity_statistics", "normalize_image"]


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
    mask = nonzero_mask(image)
    return np.stack([fn(ch, mask, config) for ch in image]).astype(np.float32, copy=False)
