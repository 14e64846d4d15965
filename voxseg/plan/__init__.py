"""The typed run plan (saved as plan.json), augmentation presets, the patch planner and the dataset
fingerprint (fingerprint.json)."""
from voxseg.plan.fingerprint import FINGERPRINT_NAME, SPACING_TOLERANCE, DatasetFingerprint, dataset_fingerprint
from voxseg.plan.plan import (AUGMENTATION_PRESETS, InferenceConfig, NetworkConfig, RunPlan, TrainConfig,
                              augmentation_preset, plan_patch_size, plan_strides, plan_target_spacing,
                              save_json_atomic, write_atomic)

__all__ = ["AUGMENTATION_PRESETS", "InferenceConfig", "NetworkConfig", "RunPlan", "TrainConfig",
           "augmentation_preset", "plan_patch_size", "plan_strides", "plan_target_spacing", "save_json_atomic",
           "write_atomic",
           "FINGERPRINT_NAME", "SPACING_TOLERANCE", "DatasetFingerprint", "dataset_fingerprint"]
