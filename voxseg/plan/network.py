"""The network's settings planned for the machine and the voxels: CPU defaults (a narrower U-Net, a smaller patch
cap) and a U-Net's strides and kernel sizes for anisotropic spacing.

``options`` here is a :class:`voxseg.config.TrainOptions` (read, never changed).
"""
from __future__ import annotations

import inspect
from typing import Callable


from voxseg.nets import resolve_device
from voxseg.config import TrainOptions
from voxseg.nets import NETWORKS
from voxseg.infer.package import source_plan as init_source_plan
from voxseg.plan.plan import plan_strides

__all__ = ["CPU_DEFAULTS", "GPU_MAX_PATCH_VOXELS", "hardware_defaults", "spacing_strides"]

# On a CPU the "unet" preset trains a U-Net of base width 16 with deep supervision on patches of at most 64^3
# voxels, under whatever the user sets (--net-args, --patch). nnU-Net's GPU-sized defaults (base 32, 96x96x64
# patches) cost several times more per iteration, so a CPU time budget would hold too few iterations to learn.
# The trade-off of width and patch against iterations in a budget: benchmarks/variants.py,
# benchmarks/time_budget.py and docs/benchmarks.md.
CPU_DEFAULTS = {"unet_kwargs": {"base_width": 16, "deep_supervision": True}, "max_patch_voxels": 64 ** 3}
GPU_MAX_PATCH_VOXELS = 96 * 96 * 64


def hardware_defaults(options: TrainOptions) -> tuple[dict, int, str]:
    """Network overrides and patch cap (voxels) for the hardware training will run on, and a note saying what was
    chosen (empty when nothing was): on a GPU the user's network arguments and a cap of
    :data:`GPU_MAX_PATCH_VOXELS`; on a CPU :data:`CPU_DEFAULTS` fill what the user left open."""
    kwargs = dict(options.network.kwargs)
    if resolve_device(options.train.device).type == "cuda":
        return kwargs, options.max_patch_voxels or GPU_MAX_PATCH_VOXELS, ""
    chosen = []
    if options.network.name == "unet" and options.network.spatial_dims == 3:
        for key, value in CPU_DEFAULTS["unet_kwargs"].items():
            if key not in kwargs:
                kwargs[key] = value
                chosen.append(f"{key}={value}")
    cap = options.max_patch_voxels
    if cap is None and options.train.patch_size is None:
        cap = CPU_DEFAULTS["max_patch_voxels"]
        chosen.append("patch <= 64^3")
    note = f"CPU defaults: {', '.join(chosen)} (--net-args / --patch override)" if chosen else ""
    return kwargs, cap or GPU_MAX_PATCH_VOXELS, note


def spacing_strides(options: TrainOptions, spacing: list[float], net_kwargs: dict, log: Callable[[str], None]) -> dict:
    """``net_kwargs`` with a U-Net's strides and kernel sizes planned for voxels of ``spacing`` (mm, the network's
    axes) by :func:`voxseg.plan.plan_strides`, when the preset takes them, the user set neither and the spacing
    is anisotropic (one axis twice as coarse as another); said in one line. A transfer (``init_from``) from a
    network of the same dimensions and depth takes the source run's instead, as its weights need. Returns a new
    dict; ``net_kwargs`` is not changed."""
    builder = NETWORKS[options.network.name].builder if options.network.name in NETWORKS else None
    if builder is None or "strides" not in inspect.signature(builder).parameters:
        return net_kwargs
    if "strides" in net_kwargs or "kernel_sizes" in net_kwargs:
        return net_kwargs
    depth = NETWORKS[options.network.name].kwargs(options.network.spatial_dims, **net_kwargs)["depth"]
    if not isinstance(depth, int):  # building the network says what is wrong with it
        return net_kwargs
    source_plan = init_source_plan(options.train.init_from) if options.train.init_from else None
    if source_plan is not None:  # transfer: the weights were learnt with the source's
        source = source_plan.network
        source_depth = NETWORKS[source.name].kwargs(source.spatial_dims, **source.kwargs).get("depth") \
            if source.name in NETWORKS else None
        if source.spatial_dims == options.network.spatial_dims and source_depth == depth:
            inherited = {k: source.kwargs[k] for k in ("strides", "kernel_sizes") if k in source.kwargs}
            if inherited:
                log(f"strides and kernels: those of the run in --init-from ({options.train.init_from})")
            return {**net_kwargs, **inherited}
    planned = plan_strides(spacing, depth)
    if planned is None:
        return net_kwargs
    strides, kernels = planned
    log(f"anisotropic voxels {' x '.join(f'{v:.3g}' for v in spacing)} mm: strides "
        f"{' '.join('x'.join(map(str, st)) for st in strides)}, kernels {' '.join('x'.join(map(str, k)) for k in kernels)} "
        "(nnU-Net's rule: an axis is down-sampled, and convolved with 3 voxels, once its spacing is within 2x of "
        "the finest; --net-args 'strides=[[2,2,2],...],kernel_sizes=[[3,3,3],...]' sets others)")
    return {**net_kwargs, "strides": strides, "kernel_sizes": kernels}
