"""The whole-case pipeline: :func:`preprocess_case` and its inverse :func:`restore_to_original`, with the
:class:`PreprocessRecord` that links them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from voxseg.data.enhance import enhance_image
from voxseg.data.orientation import reorient, reoriented_spacing
from voxseg.data.preprocess.config import PreprocessConfig
from voxseg.data.preprocess.crop import bbox_slices, nonzero_bbox
from voxseg.data.preprocess.normalize import normalize_image
from voxseg.data.preprocess.resample import resample_image, resample_label, resample_probabilities, target_shape
from voxseg.io.image import orientation_code

__all__ = ["PreprocessRecord", "PreprocessedCase", "preprocess_case", "restore_to_original"]


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
    image, label, spacing = _checked_inputs(image, label, spacing)
    image, label, spacing, reoriented = _to_run_orientation(image, label, spacing, config.orientation, affine)
    spatial = tuple(int(s) for s in image.shape[1:])

    bbox = nonzero_bbox(image) if config.crop_to_nonzero else [(0, s) for s in spatial]
    sl = bbox_slices(bbox)
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
        new_shape = target_shape(cropped_shape, spacing, new_spacing)
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


def _checked_inputs(image: np.ndarray, label: np.ndarray | None, spacing: Sequence[float]
                    ) -> tuple[np.ndarray, np.ndarray | None, tuple[float, ...]]:
    """``(image, label, spacing)`` as arrays and a float tuple; ``ValueError`` when shapes or spacing are wrong."""
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
    return image, label, spacing


def _to_run_orientation(image: np.ndarray, label: np.ndarray | None, spacing: tuple[float, ...],
                        orientation: str | None, affine: np.ndarray | None):
    """Flip / permute the voxel axes to ``orientation`` (exactly, no interpolation).

    Returns:
        ``(image, label, spacing, reoriented)``; ``reoriented`` is ``(source codes, orientation)`` when the
        axes changed, else ``None`` (the inputs are returned as they are).
    """
    if orientation is None:
        return image, label, spacing, None
    if affine is None:
        raise ValueError(f"orientation {orientation} needs the case's affine")
    source = orientation_code(affine)
    if source is None or source == orientation:
        return image, label, spacing, None
    reoriented = (source, orientation)
    image = reorient(image, *reoriented, channel_first=True)
    label = None if label is None else reorient(label, *reoriented)
    return image, label, reoriented_spacing(spacing, *reoriented), reoriented


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
    sl = bbox_slices(record.crop_bbox)
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
