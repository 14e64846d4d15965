"""nnU-Net v2's preprocessing of one case for prediction (``DefaultPreprocessor.run_case``), without nnU-Net:
read the channels with SimpleITK (array axes ``(z, y, x)``, spacing reversed), transpose by the plans'
``transpose_forward``, crop to the nonzero region (all channels, holes filled), normalise each channel by its
scheme, resample to the configuration's spacing.

Normalisation schemes (``normalization_schemes`` of the configuration, nnU-Net's
``default_normalization_schemes.py``), each on float32:

- ``ZScoreNormalization``: ``(x - mean) / max(std, 1e-8)``; with ``use_mask_for_norm`` the statistics and the
  change are limited to the nonzero region (outside stays 0).
- ``CTNormalization``: clip to the dataset's foreground percentiles 0.5 / 99.5, then ``(x - mean) / std`` with
  the foreground mean / std of ``foreground_intensity_properties_per_channel``.
- ``NoNormalization``: unchanged. ``RescaleTo01Normalization``: ``(x - min) / max(max - min, 1e-8)``.
  ``RGBTo01Normalization``: ``x / 255``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import binary_fill_holes

from voxseg.errors import InputError
from voxseg.infer.nnunet.model_folder import NnunetModel
from voxseg.infer.nnunet.resample import compute_new_shape, resample_data

__all__ = ["NORMALIZERS", "NnunetCase", "normalize_channel", "preprocess_case", "read_channels"]

_EPS = 1e-8


def _zscore(image: np.ndarray, mask: np.ndarray | None, props: dict) -> np.ndarray:
    if mask is not None:
        mean, std = image[mask].mean(), image[mask].std()
        image[mask] = (image[mask] - mean) / max(std, _EPS)
        return image
    mean, std = image.mean(), image.std()
    image -= mean
    image /= max(std, _EPS)
    return image


def _ct(image: np.ndarray, mask: np.ndarray | None, props: dict) -> np.ndarray:
    np.clip(image, props["percentile_00_5"], props["percentile_99_5"], out=image)
    image -= props["mean"]
    image /= max(props["std"], _EPS)
    return image


def _rescale01(image: np.ndarray, mask: np.ndarray | None, props: dict) -> np.ndarray:
    image -= image.min()
    image /= np.clip(image.max(), a_min=_EPS, a_max=None)
    return image


def _rgb01(image: np.ndarray, mask: np.ndarray | None, props: dict) -> np.ndarray:
    image /= 255.0
    return image


NORMALIZERS: dict[str, Callable[[np.ndarray, np.ndarray | None, dict], np.ndarray]] = {
    "ZScoreNormalization": _zscore,
    "CTNormalization": _ct,
    "NoNormalization": lambda image, mask, props: image,
    "RescaleTo01Normalization": _rescale01,
    "RGBTo01Normalization": _rgb01,
}
"""nnU-Net scheme name -> ``f(image float32, nonzero mask or None, intensity properties) -> image`` (in place)."""


def normalize_channel(image: np.ndarray, scheme: str, use_mask: bool, nonzero: np.ndarray,
                      props: dict | None) -> np.ndarray:
    """One channel (float32, changed in place and returned) normalised by nnU-Net ``scheme``.

    Args:
        nonzero: the crop's nonzero mask (used by ZScore when ``use_mask``).
        props: the channel's ``foreground_intensity_properties_per_channel`` entry (CT needs it).
    """
    if scheme not in NORMALIZERS:
        raise ValueError(f"normalisation scheme {scheme!r} is not supported ({', '.join(NORMALIZERS)})")
    mask = nonzero if (use_mask and scheme == "ZScoreNormalization") else None
    return NORMALIZERS[scheme](image, mask, props or {})


@dataclass
class NnunetCase:
    """A preprocessed case and what export needs to put the labels back in the input's geometry.

    Attributes:
        data: ``(C, *spatial)`` float32 network input at the configuration's spacing (transposed axes).
        spacing: the input's spacing in nnU-Net axis order (array axes, before the transpose), mm.
        shape_before_cropping, bbox, shape_after_cropping: transposed-axis shapes and the crop box
            ``[[start, stop], ...]``.
        sitk_geometry: ``spacing``, ``origin``, ``direction`` of the first channel as SimpleITK gives them.
        two_d_input: the image files were 2D.
    """

    data: np.ndarray
    spacing: list[float]
    shape_before_cropping: tuple[int, ...]
    bbox: list[list[int]]
    shape_after_cropping: tuple[int, ...]
    sitk_geometry: dict
    two_d_input: bool


def read_channels(paths: Sequence[Path]) -> tuple[np.ndarray, list[float], dict, bool]:
    """Channels as nnU-Net's ``SimpleITKIO.read_images``: ``(C, z, y, x)`` float32, spacing ``(z, y, x)`` mm
    (2D images get a first axis of length 1 and spacing 999 x the largest), the first image's SimpleITK
    geometry, and whether the files were 2D.

    Raises:
        InputError: an unreadable file, or channels of different shape or spacing.
    """
    arrays, spacing, geometry, two_d = [], None, None, False
    for path in paths:
        try:
            img = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            raise InputError(path, f"cannot read the image ({str(exc).strip().splitlines()[-1]})") from None
        array = sitk.GetArrayFromImage(img)
        sp = list(img.GetSpacing())
        if array.ndim == 2:
            array, sp_nn, two_d = array[None], [max(sp) * 999, *sp[::-1]], True
        elif array.ndim == 3:
            sp_nn = sp[::-1]
        else:
            raise InputError(path, f"expected a 2D or 3D image, got {array.ndim} dimensions")
        sp_nn = [abs(float(s)) for s in sp_nn]
        if arrays and (array.shape != arrays[0].shape or not np.allclose(sp_nn, spacing)):
            raise InputError(path, f"shape {array.shape} / spacing {sp_nn} differ from the first channel's "
                                   f"{arrays[0].shape} / {spacing}")
        if geometry is None:
            spacing = sp_nn
            geometry = {"spacing": img.GetSpacing(), "origin": img.GetOrigin(), "direction": img.GetDirection()}
        arrays.append(array.astype(np.float32, copy=False))
    return np.stack(arrays), spacing, geometry, two_d


def _crop_to_nonzero(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """Crop to the bounding box of voxels nonzero in any channel (holes filled): data, mask, box."""
    mask = data[0] != 0
    for c in range(1, data.shape[0]):
        mask |= data[c] != 0
    mask = binary_fill_holes(mask)
    if not mask.any():
        box = [[0, s] for s in mask.shape]
    else:
        box = []
        for axis in range(mask.ndim):
            hit = np.where(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))[0]
            box.append([int(hit[0]), int(hit[-1]) + 1])
    crop = tuple(slice(a, b) for a, b in box)
    return data[(slice(None),) + crop], mask[crop], box


def preprocess_case(model: NnunetModel, paths: Sequence[Path]) -> NnunetCase:
    """Read and preprocess one case's channel files (in channel order) for ``model``'s configuration."""
    plans, config = model.plans, model.configuration
    data, spacing, geometry, two_d = read_channels(paths)
    forward = list(plans.get("transpose_forward", [0, 1, 2]))
    data = data.transpose([0, *[i + 1 for i in forward]])
    spacing_t = [spacing[i] for i in forward]
    shape_before = tuple(data.shape[1:])
    data, nonzero, box = _crop_to_nonzero(data)
    data = np.array(data, dtype=np.float32)  # a copy the normalisation may change in place
    target = list(config["spacing"])
    if len(target) < 3:
        target = [spacing_t[0], *target]
    new_shape = compute_new_shape(data.shape[1:], spacing_t, target)
    props = plans.get("foreground_intensity_properties_per_channel",
                      plans.get("foreground_intensity_properties_by_modality", {}))
    schemes, masks = config["normalization_schemes"], config["use_mask_for_norm"]
    for c in range(data.shape[0]):
        try:
            data[c] = normalize_channel(data[c], schemes[c], bool(masks[c]), nonzero, props.get(str(c)))
        except (ValueError, KeyError, IndexError) as exc:
            raise InputError(model.folder / "plans.json", f"channel {c}: cannot normalise ({exc})") from None
    shape_after = tuple(data.shape[1:])
    kw = config.get("resampling_fn_data_kwargs", {})
    data = resample_data(data, new_shape, spacing_t, target, kw.get("order", 3), kw.get("order_z", 0),
                         kw.get("force_separate_z"))
    return NnunetCase(data, spacing, shape_before, box, shape_after, geometry, two_d)
