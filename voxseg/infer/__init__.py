"""Inference: sliding window with Gaussian blending, loading runs, writing NIfTI in the input geometry."""
from voxseg.infer.predict import PredictedCase, predict_case, predict_cases, predict_path
from voxseg.infer.runtime import (CHECKPOINT_BEST, CHECKPOINT_LAST, autocast_context, build_model, load_model,
                                  predict_volume, probabilities_to_labels)
from voxseg.infer.sliding_window import gaussian_importance_map, sliding_window_predict, window_starts

__all__ = ["PredictedCase", "predict_case", "predict_cases", "predict_path", "CHECKPOINT_BEST", "CHECKPOINT_LAST",
           "autocast_context", "build_model", "load_model", "predict_volume", "probabilities_to_labels",
           "gaussian_importance_map", "sliding_window_predict", "window_starts"]
