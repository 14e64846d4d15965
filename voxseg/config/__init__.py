"""Typed configuration, defined once: the run plan saved as ``plan.json`` beside every model. Every later
stage reads its settings from here."""
from voxseg.config.run_plan import (AUGMENTATION_PRESETS, InferenceConfig, NetworkConfig, RunPlan, TrainConfig,
                                    augmentation_preset)

__all__ = ["AUGMENTATION_PRESETS", "InferenceConfig", "NetworkConfig", "RunPlan", "TrainConfig",
           "augmentation_preset"]
