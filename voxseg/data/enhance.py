"""Optional intensity enhancement before normalisation: N4 bias-field correction and anisotropic diffusion.

Both steps run per channel, with SimpleITK, on the case's own voxel grid and spacing (the array
``(Z, Y, X)`` becomes an ITK image of size ``(X, Y, Z)`` with spacing ``(sx, sy, sz)`` mm, so every
physical parameter — B-spline control-point distance, diffusion stability limit — is in mm).
:func:`voxseg.data.preprocess.preprocess_case` calls :func:`enhance_image` when
``PreprocessConfig.n4`` or ``PreprocessConfig.denoise`` is set, so training and prediction apply the
same steps with the same parameters (they live in the config, hence in ``plan.json`` and in the
preprocessing cache stamp).

Background stays background: voxels that are 0 in every channel before enhancement are 0 after it,
so cropping to the nonzero region and the z-score mask are unchanged by these steps.

References:
    N. J. Tustison et al., "N4ITK: Improved N3 Bias Correction", IEEE TMI 29(6):1310-1320, 2010.
    P. Perona and J. Malik, "Scale-space and edge detection using anisotropic diffusion",
    IEEE TPAMI 12(7):629-639, 1990.
    R. Whitaker and X. Xue, "Variable-conductance, level-set curvature for image denoising",
    ICIP 2001 (the modified-curvature diffusion of ``CurvatureAnisotropicDiffusion``).
    Archit & Adilina (2022) use N4 throughout; they tried Perona-Malik denoising and dropped it.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

if TYPE_CHECKING:  # only for the annotation; preprocess imports this module
    from voxseg.data.preprocess import PreprocessConfig

__all__ = [
    "DENOISERS",
    "n4_bias_correction",
    "anisotropic_diffusion",
    "diffusion_time_step_limit",
    "enhance_image",
]

#: Names accepted by ``PreprocessConfig.denoise`` -> SimpleITK filter class.
DENOISERS: dict[str, type] = {
    "gradient": sitk.GradientAnisotropicDiffusionImageFilter,
    "curvature": sitk.CurvatureAnisotropicDiffusionImageFilter,
}

# Fewer zero voxels than this share of the volume: no skull-stripped background, use Otsu for the mask.
_MIN_BACKGROUND_FRACTION = 0.01


def _to_sitk(channel: np.ndarray, spacing: Sequence[float]) -> sitk.Image:
    """``(Z, Y, X)`` array + ``(sz, sy, sx)`` mm -> float32 ITK image, size ``(X, Y, Z)``, spacing ``(sx, sy, sz)``."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(channel, dtype=np.float32))
    image.SetSpacing(tuple(float(s) for s in reversed(tuple(spacing))))
    return image


def _check_channel(channel: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, tuple[float, float, float]]:
    channel = np.asarray(channel)
    if channel.ndim != 3:
        raise ValueError(f"expected one (Z, Y, X) channel, got shape {channel.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or any(not s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive mm values (sz, sy, sx), got {spacing}")
    return channel, spacing  # type: ignore[return-value]


def _n4_mask(channel: np.ndarray, image: sitk.Image) -> sitk.Image:
    """Where N4 fits the field: positive voxels of a skull-stripped image, else Otsu foreground."""
    positive = channel > 0
    if np.count_nonzero(channel == 0) >= _MIN_BACKGROUND_FRACTION * channel.size:
        mask = sitk.GetImageFromArray(positive.astype(np.uint8))
        mask.CopyInformation(image)
        return mask
    # No zero background (raw head MRI): Otsu separates head from air; 1 inside, 0 outside.
    otsu = sitk.OtsuThreshold(image, 0, 1, 200)
    mask_arr = sitk.GetArrayViewFromImage(otsu).astype(bool) & positive
    mask = sitk.GetImageFromArray(mask_arr.astype(np.uint8))
    mask.CopyInformation(image)
    return mask


def n4_bias_correction(
    channel: np.ndarray,
    spacing: Sequence[float],
    *,
    shrink: int = 4,
    iterations: Sequence[int] = (50, 50, 30, 20),
    convergence: float = 1e-3,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Remove a smooth multiplicative intensity non-uniformity (bias field) with N4.

    The fast recipe: N4 estimates the log bias field on the image shrunk by ``shrink`` along each
    axis, the B-spline field is then evaluated on the full-resolution grid and divided out.

    Args:
        channel: one MRI channel ``(Z, Y, X)``, intensities >= 0 (background 0).
        spacing: ``(sz, sy, sx)`` voxel size in mm.
        shrink: integer shrink factor per axis for the fit (capped at each axis' size); 4 fits a
            240x240x155 BraTS channel in a few seconds.
        iterations: maximum iterations per fitting level; its length is the number of B-spline
            fitting levels (each level doubles the control-point resolution).
        convergence: stop a level when the change of the coefficient of variation of the estimated
            field falls below this (ITK ``ConvergenceThreshold``).
        mask: optional boolean ``(Z, Y, X)`` region to fit the field on; default: the positive
            voxels when the image has a zero background (>= 1% zeros), else the Otsu foreground.

    Returns:
        ``(Z, Y, X)`` float32, ``channel / exp(log_bias)``; zero voxels stay 0. A channel without
        any positive voxel in the mask is returned unchanged (as float32).
    """
    channel, spacing = _check_channel(channel, spacing)
    if int(shrink) < 1:
        raise ValueError(f"n4 shrink factor must be >= 1, got {shrink}")
    iterations = [int(i) for i in iterations]
    if not iterations or any(i < 1 for i in iterations):
        raise ValueError(f"n4 iterations must be a non-empty list of positive integers, got {iterations}")
    image = _to_sitk(channel, spacing)
    if mask is None:
        mask_img = _n4_mask(channel, image)
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != channel.shape:
            raise ValueError(f"mask shape {mask.shape} != channel shape {channel.shape}")
        mask_img = sitk.GetImageFromArray((mask & (channel > 0)).astype(np.uint8))
        mask_img.CopyInformation(image)
    if not sitk.GetArrayViewFromImage(mask_img).any():
        return channel.astype(np.float32, copy=True)

    factors = [max(1, min(int(shrink), n)) for n in image.GetSize()]
    small = sitk.Shrink(image, factors)
    small_mask = sitk.Shrink(mask_img, factors)
    if not sitk.GetArrayViewFromImage(small_mask).any():  # a tiny mask can vanish when subsampled
        small, small_mask = image, mask_img
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations(iterations)
    corrector.SetConvergenceThreshold(float(convergence))
    corrector.Execute(small, small_mask)
    log_bias = sitk.GetArrayFromImage(corrector.GetLogBiasFieldAsImage(image))
    return (channel.astype(np.float32) * np.exp(-log_bias)).astype(np.float32, copy=False)


def diffusion_time_step_limit(spacing: Sequence[float]) -> float:
    """Largest stable explicit time step of ITK's anisotropic diffusion: ``min(spacing) / 2**(N + 1)``.

    Args:
        spacing: voxel size in mm, one value per axis (N = ``len(spacing)``).

    Returns:
        The limit (0.0625 for 1 mm isotropic 3-D voxels).
    """
    return float(min(spacing)) / 2.0 ** (len(spacing) + 1)


def anisotropic_diffusion(
    channel: np.ndarray,
    spacing: Sequence[float],
    *,
    method: str = "gradient",
    iterations: int = 5,
    conductance: float = 1.0,
    time_step: float | None = None,
) -> np.ndarray:
    """Edge-preserving smoothing by Perona-Malik (``"gradient"``) or modified-curvature
    (``"curvature"``) anisotropic diffusion.

    Args:
        channel: ``(Z, Y, X)`` intensities.
        spacing: ``(sz, sy, sx)`` voxel size in mm (gradients are taken in mm).
        method: a key of :data:`DENOISERS`.
        iterations: number of explicit diffusion steps.
        conductance: edge threshold K relative to the image's mean gradient magnitude (ITK's
            conductance parameter, so independent of the intensity scale): lower keeps more edges,
            higher smooths more. Typical 0.5-3.
        time_step: step per iteration; ``None`` = the stability limit
            :func:`diffusion_time_step_limit`. A larger value is clipped to the limit with a warning.

    Returns:
        ``(Z, Y, X)`` float32.
    """
    channel, spacing = _check_channel(channel, spacing)
    if method not in DENOISERS:
        raise ValueError(f"unknown denoise method {method!r}; choose one of {sorted(DENOISERS)}")
    if int(iterations) < 1 or not conductance > 0:
        raise ValueError(f"diffusion needs iterations >= 1 and conductance > 0, got {iterations}, {conductance}")
    limit = diffusion_time_step_limit(spacing)
    step = limit if time_step is None else float(time_step)
    if not step > 0:
        raise ValueError(f"diffusion time step must be > 0, got {time_step}")
    if step > limit:
        warnings.warn(
            f"diffusion time step {step:g} exceeds the stability limit {limit:g} for spacing {spacing} mm; "
            f"using {limit:g}",
            stacklevel=2,
        )
        step = limit
    diffusion = DENOISERS[method]()
    diffusion.SetNumberOfIterations(int(iterations))
    diffusion.SetConductanceParameter(float(conductance))
    diffusion.SetTimeStep(step)
    out = diffusion.Execute(_to_sitk(channel, spacing))
    return sitk.GetArrayFromImage(out).astype(np.float32, copy=False)


def enhance_image(image: np.ndarray, spacing: Sequence[float], config: "PreprocessConfig") -> np.ndarray:
    """Apply the enhancement steps of ``config`` (N4, then diffusion) to the selected channels.

    Args:
        image: ``(C, Z, Y, X)`` intensities.
        spacing: ``(sz, sy, sx)`` voxel size in mm.
        config: uses ``n4``, ``n4_shrink``, ``n4_iterations``, ``n4_convergence``, ``denoise``,
            ``denoise_iterations``, ``denoise_conductance``, ``denoise_time_step`` and
            ``enhance_channels`` (channel indices, ``None`` = all).

    Returns:
        ``(C, Z, Y, X)`` float32; unselected channels are copied unchanged, and voxels that are 0 in
        every channel of the input are 0 in every channel of the output.

    Raises:
        ValueError: ``enhance_channels`` names a channel the image does not have.
    """
    image = np.asarray(image)
    if image.ndim != 4:
        raise ValueError(f"expected a (C, Z, Y, X) image, got shape {image.shape}")
    out = image.astype(np.float32, copy=True)
    if not config.n4 and config.denoise is None:
        return out
    n_channels = image.shape[0]
    channels = range(n_channels) if config.enhance_channels is None else sorted(set(config.enhance_channels))
    bad = [c for c in channels if not 0 <= c < n_channels]
    if bad:
        raise ValueError(f"enhance_channels {bad} out of range for an image with {n_channels} channel(s)")
    background = ~(image != 0).any(axis=0)
    for c in channels:
        channel = out[c]
        if config.n4:
            channel = n4_bias_correction(
                channel, spacing, shrink=config.n4_shrink, iterations=config.n4_iterations,
                convergence=config.n4_convergence,
            )
        if config.denoise is not None:
            channel = anisotropic_diffusion(
                channel, spacing, method=config.denoise, iterations=config.denoise_iterations,
                conductance=config.denoise_conductance, time_step=config.denoise_time_step,
            )
        channel[background] = 0.0  # diffusion spreads the brain edge into the background
        out[c] = channel
    return out
