"""The typed run plan (saved as plan.json), augmentation presets and the patch planner."""
from voxseg.plan.plan import (AUGMENTATION_PRESETS, InferenceConfig, NetworkConfig, RunPlan, TrainConfig,
                              augmentation_preset, plan_patch_size, save_json_atomic)

__all__ = ["AUGMENTATION_PRESETS", "InferenceConfig", "NetworkConfig", "RunPlan", "TrainConfig",
           "augmentation_preset", "plan_patch_size", "save_json_atomic"]
