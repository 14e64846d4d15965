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

Modules: ``config`` (:class:`PreprocessConfig`), ``label_mapping`` (:class:`LabelMapping`), ``crop``,
``normalize`` (the :data:`NORMALIZATIONS` registry), ``resample`` and ``case`` (:func:`preprocess_case`,
:func:`restore_to_original`).
"""
from voxseg.data.preprocess.config import PreprocessConfig
from voxseg.data.preprocess.label_mapping import LabelMapping
from voxseg.data.preprocess.crop import nonzero_bbox
from voxseg.data.preprocess.normalize import NORMALIZATIONS, foreground_intensity_statistics, normalize_image
from voxseg.data.preprocess.resample import resample_image, resample_label, resample_probabilities
from voxseg.data.preprocess.case import PreprocessedCase, PreprocessRecord, preprocess_case, restore_to_original

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
