"""Data preparation: preprocessing and its cache, label mappings, splits, patch sampling, the network's input
and synthetic phantoms.

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
from voxseg.data.network_input import channel_indices, network_input, select_channels, stack_neighbours
from voxseg.data.sampling import (PatchSampler, minicube_partition, minicube_starts, pad_to_multiple, random_flip,
                                  select_slices)

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
    # network input (channel subset, 2.5-D stacks), shared by training and inference
    "channel_indices",
    "network_input",
    "select_channels",
    "stack_neighbours",
    # augmentation and loading
    "TRANSFORMS",
    "AugmentConfig",
    "Augmenter",
    "Transform",
    "build_augmentation",
    "PatchLoader",
    "minicube_partition",
    "minicube_starts",
    "select_slices",
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
