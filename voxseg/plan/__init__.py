"""The typed run plan (saved as plan.json) and the patch planner."""
from voxseg.plan.plan import InferenceConfig, NetworkConfig, RunPlan, TrainConfig, plan_patch_size, save_json_atomic

__all__ = ["InferenceConfig", "NetworkConfig", "RunPlan", "TrainConfig", "plan_patch_size", "save_json_atomic"]
