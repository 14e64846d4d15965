"""Segmentation metrics: overlap, volume and surface distances per structure, and their aggregation; the
out-of-fold evaluation of a k-fold run and the post-processing chosen on it.

The metrics are pure functions, arrays in and numbers out (``crossval`` alone loads fold models and predicts); spacings are ``(sz, sy, sx)`` in mm and every distance
is in mm. The empty-mask policy is in :mod:`voxseg.metrics.policy` (also as ``EMPTY_MASK_POLICY``),
the surface definitions (MONAI-compatible HD95) in :mod:`voxseg.metrics.surface`.
"""
from voxseg.metrics.aggregate import confusion_summary, format_summary, summarise
from voxseg.metrics.crossval import evaluate_cross_validation, out_of_fold_evaluation
from voxseg.metrics.case import METRIC_NAMES, binary_metrics, case_metrics, confusion_matrix
from voxseg.metrics.lesionwise import (BRATS2023_LESION_PARAMETERS, BRATS_HD95_PENALTY_MM, LESION_METRIC_NAMES,
                                      lesionwise_metrics)
from voxseg.metrics.evaluate import case_id_from_name, evaluate_folders, find_label_files
from voxseg.metrics.held_out import held_out_summaries, run_case_roles
from voxseg.metrics.overlap import confusion_counts, overlap_metrics
from voxseg.metrics.postprocessing import (PostprocessingChoice, choose_postprocessing, choose_run_postprocessing,
                                           save_postprocessing)
from voxseg.metrics.policy import EMPTY_MASK_POLICY, default_penalty_mm
from voxseg.metrics.surface import surface_distances, surface_metrics, surface_voxels

__all__ = [
    "BRATS2023_LESION_PARAMETERS",
    "BRATS_HD95_PENALTY_MM",
    "LESION_METRIC_NAMES",
    "confusion_matrix",
    "confusion_summary",
    "lesionwise_metrics",
    "EMPTY_MASK_POLICY",
    "METRIC_NAMES",
    "binary_metrics",
    "case_id_from_name",
    "case_metrics",
    "confusion_counts",
    "evaluate_cross_validation",
    "out_of_fold_evaluation",
    "PostprocessingChoice",
    "choose_postprocessing",
    "choose_run_postprocessing",
    "save_postprocessing",
    "default_penalty_mm",
    "evaluate_folders",
    "find_label_files",
    "format_summary",
    "held_out_summaries",
    "overlap_metrics",
    "run_case_roles",
    "summarise",
    "surface_distances",
    "surface_metrics",
    "surface_voxels",
]
