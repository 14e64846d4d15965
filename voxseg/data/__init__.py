"""Data preparation: preprocessing and its cache, label mappings, splits, patch sampling and synthetic phantoms.

Arrays are ``(C, Z, Y, X)`` images and ``(Z, Y, X)`` labels; spacings ``(sz, sy, sx)`` in mm.
"""
from voxseg.data.fingerprint import FINGERPRINT_NAME, SPACING_TOLERANCE, DatasetFingerprint, dataset_fingerprint
from voxseg.data.phantoms import make_phantom_case, make_phantom_dataset
from voxseg.data.preprocess import (
    NORMALIZATIONS,
    LabelMapping,
    PreprocessConfig,
    PreprocessedCase,
    PreprocessRecord,
    foreground_intensity_statistics,
    nonzero_bbox,
    normalize_image,
    preprocess_case,
    resample_image,
    resample_label,
    resample_probabilities,
    restore_to_original,
)
from voxseg.data.arrays import tensor_view
from voxseg.data.orientation import check_orientation_code, reorient, reoriented_spacing
from voxseg.data.loader import PatchLoader
from voxseg.data.tiling import gaussian_importance_map, sliding_window_predict, window_grid, window_starts
from voxseg.data.sampling import (ChannelSubset, PatchSampler, minicube_partition, minicube_starts, pad_to_multiple,
                                  random_flip, select_slices, stack_neighbours)

from voxseg.data.augment import TRANSFORMS, AugmentConfig, Augmenter, Transform, build_augmentation
from voxseg.data.enhance import DENOISERS, anisotropic_diffusion, enhance_image, n4_bias_correction
from voxseg.data.labels import (REGION_NAMES, LabelScheme, check_labels_fit, declared_regions_scheme,
                               labels_to_regions, regions_to_labels)
from voxseg.data.cache import PreparedCase, cache_stamp, cached_minicubes, prepare_cases
from voxseg.data.splits import kfold_splits, read_split, split_cases

__all__ = [
    "FINGERPRINT_NAME", "SPACING_TOLERANCE", "DatasetFingerprint", "dataset_fingerprint",
    "tensor_view",
    # orientation
    "check_orientation_code",
    "reorient",
    "reoriented_spacing",
    # preprocess
    "NORMALIZATIONS",
    "LabelMapping",
    "PreprocessConfig",
    "foreground_intensity_statistics",
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
    # tiling (sliding window)
    "gaussian_importance_map",
    "sliding_window_predict",
    "window_grid",
    "window_starts",
    # augmentation and loading
    "TRANSFORMS",
    "AugmentConfig",
    "Augmenter",
    "Transform",
    "build_augmentation",
    "PatchLoader",
    "ChannelSubset",
    "minicube_partition",
    "minicube_starts",
    "select_slices",
    "stack_neighbours",
    # enhance (N4, anisotropic diffusion)
    "DENOISERS",
    "anisotropic_diffusion",
    "enhance_image",
    "n4_bias_correction",
    # labels
    "REGION_NAMES",
    "LabelScheme",
    "check_labels_fit",
    "declared_regions_scheme",
    "labels_to_regions",
    "regions_to_labels",
    # the preprocessed-case cache
    "PreparedCase",
    "cache_stamp",
    "cached_minicubes",
    "prepare_cases",
    # splits
    "kfold_splits",
    "read_split",
    "split_cases",
    # phantoms
    "make_phantom_case",
    "make_phantom_dataset",
]
