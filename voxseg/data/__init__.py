"""Data preparation: preprocessing, label mappings, patch sampling and synthetic phantoms.

Arrays are ``(C, Z, Y, X)`` images and ``(Z, Y, X)`` labels; spacings ``(sz, sy, sx)`` in mm.
"""
from voxseg.data.phantoms import make_phantom_case, make_phantom_dataset
from voxseg.data.preprocess import (
    NORMALIZATIONS,
    LabelMapping,
    PreprocessConfig,
    PreprocessedCase,
    PreprocessRecord,
    nonzero_bbox,
    normalize_image,
    preprocess_case,
    resample_image,
    resample_label,
    resample_probabilities,
    restore_to_original,
)
from voxseg.data.sampling import PatchSampler, pad_to_multiple, random_flip

from voxseg.data.labels import REGION_NAMES, LabelScheme, check_labels_fit, labels_to_regions, regions_to_labels

__all__ = [
    # preprocess
    "NORMALIZATIONS",
    "LabelMapping",
    "PreprocessConfig",
    "PreprocessedCase",
    "PreprocessRecord",
    "nonzero_bbox",
    "normalize_image",
    "preprocess_case",
    "resample_image",
    "resample_label",
    "resample_probabilities",
    "restore_to_original",
    # sampling
    "PatchSampler",
    "pad_to_multiple",
    "random_flip",
    # labels
    "REGION_NAMES",
    "LabelScheme",
    "check_labels_fit",
    "labels_to_regions",
    "regions_to_labels",
    # phantoms
    "make_phantom_case",
    "make_phantom_dataset",
]
