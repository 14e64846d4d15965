"""Inference: sliding window with Gaussian blending, test-time augmentation, ensembles (folds, runs,
per-label merge tables), post-processing rules, uncertainty maps, and writing NIfTI in the input geometry.

The sliding window (:mod:`voxseg.data.tiling`) and a planned network's run-time pieces (:mod:`voxseg.nets.runtime`)
live lower in the pipeline, since validation during training uses them too; they are re-exported here."""
from voxseg.data.tiling import gaussian_importance_map, sliding_window_predict, window_grid, window_starts
from voxseg.infer.ensemble import (MERGE_TABLES, EnsembleMember, EnsemblePrediction, MergeRule, MergeTable,
                                   check_members, count_windows, ensemble_predict, load_members, load_merge_table,
                                   member_dirs)
from voxseg.infer.postprocess import PostRule, apply_postprocessing, candidate_rules, load_postprocessing
from voxseg.infer.predict import PredictedCase, PredictOptions, predict_case, predict_cases, predict_path
from voxseg.infer.runtime import load_model
from voxseg.infer.tta import TTAVariant, tta_predict, tta_variants
from voxseg.infer.uncertainty import mutual_information, predictive_entropy
from voxseg.nets.runtime import autocast_context, build_model, predict_volume, probabilities_to_labels, resolve_amp
from voxseg.infer.checkpoint_files import CHECKPOINT_BEST, CHECKPOINT_LAST, CHECKPOINT_SWA, checkpoint_path

__all__ = [
    "MERGE_TABLES", "EnsembleMember", "EnsemblePrediction", "MergeRule", "MergeTable", "check_members",
    "count_windows", "ensemble_predict", "load_members", "load_merge_table", "member_dirs",
    "PostRule", "apply_postprocessing", "candidate_rules", "load_postprocessing",
    "PredictedCase", "PredictOptions", "predict_case", "predict_cases", "predict_path",
    "CHECKPOINT_BEST", "CHECKPOINT_LAST", "CHECKPOINT_SWA", "autocast_context", "build_model", "checkpoint_path",
    "load_model",
    "predict_volume", "probabilities_to_labels", "resolve_amp",
    "gaussian_importance_map", "sliding_window_predict", "window_grid", "window_starts",
    "TTAVariant", "tta_predict", "tta_variants", "mutual_information", "predictive_entropy",
]
