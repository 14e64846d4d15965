"""Inference: sliding window with Gaussian blending on the network's device, test-time augmentation, ensembles
(folds, runs, per-label merge tables), post-processing rules, uncertainty maps, and writing NIfTI in the input
geometry.

Validation during training predicts through the same :func:`predict_volume`."""
from voxseg.infer.backends import (BACKEND_NAMES, PRECISION_NAMES, InferenceBackend, ValidationBackend,
                                    inference_precision, openvino_available)
from voxseg.infer.ensemble import (EnsembleMember, EnsemblePrediction, check_members, count_windows, ensemble_predict,
                                   load_members, member_dirs)
from voxseg.infer.merge import MERGE_TABLES, MergeRule, MergeTable, load_merge_table
from voxseg.infer.model_files import (CHECKPOINT_BEST, CHECKPOINT_LAST, CHECKPOINT_SWA, checkpoint_path, load_model,
                                      read_checkpoint_file, read_model_weights)
from voxseg.infer.package import ModelPackage, is_package, open_package
from voxseg.infer.postprocess import PostRule, apply_postprocessing, candidate_rules, load_postprocessing
from voxseg.infer.predict import PredictedCase, PredictOptions, predict_case, predict_cases, predict_path
from voxseg.infer.sliding_window import plan_input, predict_volume, probabilities_to_labels, sliding_window_predict
from voxseg.infer.tta import TTAVariant, tta_predict, tta_variants
from voxseg.infer.uncertainty import mutual_information, predictive_entropy
from voxseg.infer.windows import gaussian_importance_map, window_grid, window_starts
from voxseg.nets import autocast_context, build_model, resolve_amp, resolve_device

__all__ = [
    "BACKEND_NAMES", "PRECISION_NAMES", "InferenceBackend", "ValidationBackend", "openvino_available",
    "MERGE_TABLES", "EnsembleMember", "EnsemblePrediction", "MergeRule", "MergeTable", "check_members",
    "count_windows", "ensemble_predict", "load_members", "load_merge_table", "member_dirs",
    "PostRule", "apply_postprocessing", "candidate_rules", "load_postprocessing",
    "PredictedCase", "PredictOptions", "predict_case", "predict_cases", "predict_path",
    "CHECKPOINT_BEST", "CHECKPOINT_LAST", "CHECKPOINT_SWA", "checkpoint_path", "load_model", "read_checkpoint_file",
    "read_model_weights", "ModelPackage", "is_package", "open_package",
    "inference_precision", "plan_input", "predict_volume", "probabilities_to_labels", "sliding_window_predict",
    "gaussian_importance_map", "window_grid", "window_starts",
    "autocast_context", "build_model", "resolve_amp", "resolve_device",
    "TTAVariant", "tta_predict", "tta_variants", "mutual_information", "predictive_entropy",
]
