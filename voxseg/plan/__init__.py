"""Planning: from the dataset fingerprint, the hardware and the budget to the shapes a run uses (patch,
target spacing, strides for anisotropic voxels), fitted to the memory and the time available."""
from voxseg.plan.plan import plan_patch_size, plan_strides, plan_target_spacing

__all__ = ["plan_patch_size", "plan_strides", "plan_target_spacing"]
