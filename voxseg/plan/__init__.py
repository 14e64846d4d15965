"""Planning: from the dataset fingerprint, the hardware and the budget to the run plan (patch, target spacing,
strides for anisotropic voxels, normalisation, voxel order, label scheme), fitted to the memory and the time
available. Every planner returns a new plan (or options) and leaves its argument as it was.

Modules: ``plan`` (shape rules), ``memory`` and ``timing`` (estimates and fits of one training step),
``network`` (CPU defaults, strides), ``fit`` (memory and time fits of a plan), ``resolve`` (decisions taken from
the data before preprocessing), ``planner`` (:func:`plan_run`), ``check`` (:func:`check_plan`), ``validation_budget``
(:func:`plan_validation`: validation sized to its share of the budget).
"""
from voxseg.plan.plan import plan_patch_size, plan_strides, plan_target_spacing
from voxseg.plan.network import CPU_DEFAULTS, GPU_MAX_PATCH_VOXELS, hardware_defaults, spacing_strides
from voxseg.plan.fit import fit_memory, fit_time
from voxseg.plan.resolve import (resolve_label_scheme, resolve_normalization, resolve_options, resolve_orientation,
                                 resolve_spacing, run_fingerprint)
from voxseg.plan.planner import checked_patch_size, label_names_for, plan_run
from voxseg.plan.check import check_edited_plan, check_plan, checked_plan
from voxseg.plan.validation_budget import plan_validation

__all__ = ["CPU_DEFAULTS", "GPU_MAX_PATCH_VOXELS", "check_edited_plan", "check_plan", "checked_patch_size",
           "checked_plan", "fit_memory", "fit_time", "hardware_defaults", "label_names_for", "plan_patch_size",
           "plan_run", "plan_strides", "plan_validation", "plan_target_spacing", "resolve_label_scheme", "resolve_normalization",
           "resolve_options", "resolve_orientation", "resolve_spacing", "run_fingerprint", "spacing_strides"]
