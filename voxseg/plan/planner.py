"""The run plan from the user's options and the data: the training settings, the network (sized for the hardware,
strided for the voxel spacing), the patch (from the median case shape, fitted to the memory and the time budget)
and the label scheme.

``options`` here is a :class:`voxseg.config.TrainOptions` (read, never changed).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import torch

from voxseg.config import NetworkConfig, RunPlan, TrainConfig, TrainOptions
from voxseg.data.cache import PreparedCase
from voxseg.data.fingerprint import DatasetFingerprint
from voxseg.errors import InputError
from voxseg.io.datasets import Dataset
from voxseg.nets import NETWORKS, build_model, check_spatial_size
from voxseg.plan.fit import fit_memory, fit_time
from voxseg.plan.network import hardware_defaults, spacing_strides
from voxseg.plan.plan import plan_patch_size
from voxseg.plan.resolve import resolve_label_scheme
from voxseg.plan.rules import Choice, network_depth_rule

__all__ = ["checked_patch_size", "label_names_for", "plan_run"]


def plan_run(options: TrainOptions, dataset: Dataset, label_values: list[int], prepared: list[PreparedCase],
             log: Callable[[str], None] = print, fingerprint: DatasetFingerprint | None = None
             ) -> tuple[RunPlan, torch.nn.Module]:
    """The run plan: the user's options, with the patch planned from the median case shape, the network size
    and patch cap chosen for the hardware, and a U-Net's strides and kernels for the voxel spacing (the
    resampling target, else the ``fingerprint``'s median), where the user did not set them; and the network it
    planned with (built once; :func:`voxseg.plan.check_plan` checks it again).

    Args:
        label_values: the run's label values, 0 first.
        prepared: the preprocessed cases (their ``(Z, Y, X)`` shapes size the patch).

    Raises:
        ValueError, TypeError, KeyError, IndexError: an option that cannot be planned (its own words).
        InputError: options the dataset cannot be trained with (a mode, a channel, a label scheme).
    """
    patch = checked_patch_size(options.train.patch_size, options.network.spatial_dims)
    options = dataclasses.replace(options, train=dataclasses.replace(options.train, patch_size=patch))
    net_kwargs, max_patch_voxels, note = hardware_defaults(options)
    if note:
        log(note)
    spacing = options.preprocess.target_spacing or (fingerprint.spacing_median if fingerprint else None)
    if spacing:
        net_kwargs = spacing_strides(options, list(spacing)[-options.network.spatial_dims:], net_kwargs, log)
    train = _train_config(options)
    if train.mode != "3d" and options.network.spatial_dims != 2:
        raise InputError(dataset.root, f"training mode {train.mode} needs a 2-D network (--dims 2)")
    plan = _first_plan(options, dataset, label_values, net_kwargs, train)
    model = build_model(plan)
    patch = _planned_patch(options, train, model, prepared, max_patch_voxels)
    if _depth_is_planned(options, train):
        plan, model, patch = _plan_depth(options, plan, model, patch, prepared, max_patch_voxels, spacing, log)
    plan = dataclasses.replace(plan, train=dataclasses.replace(train, patch_size=patch))
    plan = fit_memory(plan, model, log, options.memory_gib, user_patch=options.train.patch_size is not None)
    if options.min_iterations and train.time_budget_minutes and not (options.train.patch_size or train.minicube):
        plan = fit_time(plan, model, options.min_iterations, log, options.epochs_from_budget)
    _warn_patch_beyond_cases(options, plan, prepared, log)
    return plan, model


def checked_patch_size(patch_size: list[int] | None, spatial_dims: int) -> list[int] | None:
    """A patch the user gave, as ``[pz, py, px]`` voxels: three sizes for a 3-D network; for a 2-D one (slices)
    ``Y x X``, or ``1 x Y x X``. ``None`` stays ``None`` (planned from the data).

    Raises:
        ValueError: another number of sizes, or a size below 1.
    """
    if patch_size is None:
        return None
    sizes = [int(v) for v in patch_size]
    if any(v < 1 for v in sizes):
        raise ValueError(f"--patch: sizes must be >= 1, got {'x'.join(map(str, sizes))}")
    if spatial_dims == 3 and len(sizes) != 3:
        raise ValueError(f"--patch: a 3-D network needs 3 sizes (Z x Y x X), got {'x'.join(map(str, sizes))} "
                         "(2-D slices: --dims 2 with a Y x X patch)")
    if spatial_dims == 2:
        if len(sizes) == 2:
            sizes = [1, *sizes]
        if len(sizes) != 3 or sizes[0] != 1:
            raise ValueError(f"--patch: a 2-D network takes a slice, Y x X (or 1 x Y x X), got "
                             f"{'x'.join(map(str, patch_size))}")
    return sizes


def _train_config(options: TrainOptions) -> TrainConfig:
    """The training settings the user chose (and the rules planned, :func:`voxseg.plan.resolve_planned`), with the
    optimiser sgd and the learning rate by optimiser (sgd 0.01, the others 1e-3) where still unset."""
    t = options.train
    optimizer = t.optimizer or "sgd"
    lr = t.lr if t.lr is not None else (0.01 if optimizer == "sgd" else 1e-3)
    return dataclasses.replace(t, optimizer=optimizer, lr=lr, loss_kwargs=dict(t.loss_kwargs))


def _first_plan(options: TrainOptions, dataset: Dataset, label_values: list[int], net_kwargs: dict, train: TrainConfig) -> RunPlan:
    """The plan before its patch is planned: channels, labels and their scheme, preprocessing, network, training."""
    label_names = label_names_for(options.label_names, dataset, label_values)
    scheme = resolve_label_scheme(options, dataset)
    plan = RunPlan(channel_names=list(dataset.channel_names), label_values=label_values, label_names=label_names,
                   label_scheme=scheme.name, label_regions={k: list(v) for k, v in scheme.region_values.items()},
                   region_labels=list(scheme.region_labels), preprocess=options.preprocess,
                   network=NetworkConfig(options.network.name, options.network.spatial_dims, net_kwargs), train=train,
                   dataset=str(dataset.root), augment=options.augmentation(),
                   planner_notes=list(options.planner_notes), recipe=dict(options.recipe))
    try:
        plan.channel_indices
    except ValueError as exc:
        raise InputError(dataset.root, str(exc)) from None
    return plan


def label_names_for(given: list[str] | dict[str, str] | None, dataset: Dataset, label_values: list[int]
                 ) -> dict[str, str]:
    """``{value as text: name}``: the user's names (``--label-names``, ``TrainOptions.label_names``) where given,
    else the dataset.json's. ``label_values``: the run's label values, 0 first.

    Raises:
        InputError: a list of names whose count is not the number of foreground label values, names that repeat,
            or a value named that the dataset does not hold (one line).
    """
    if given is None:
        return {str(v): n for v, n in (dataset.label_names or {}).items()}
    foreground = [v for v in label_values if v != 0]
    if isinstance(given, dict):
        unknown = sorted(set(given) - {str(v) for v in label_values}, key=int)
        if unknown:
            raise InputError(dataset.root, f"--label-names names label value(s) {', '.join(unknown)}, which the "
                                           f"dataset does not hold (its values: {', '.join(map(str, label_values))})")
        names = dict(given)
    else:
        if len(given) != len(foreground):
            raise InputError(dataset.root, f"--label-names gives {len(given)} name(s) ({', '.join(given)}) for "
                                           f"{len(foreground)} foreground label value(s) "
                                           f"({', '.join(map(str, foreground))}): give one name per value, in order")
        names = {str(v): n for v, n in zip(foreground, given)}
    shown = [n for v, n in names.items() if v != "0"]
    if len(set(shown)) != len(shown):
        raise InputError(dataset.root, f"--label-names repeats a name ({', '.join(shown)}): each structure needs "
                                       "its own")
    return names


def _planned_patch(options: TrainOptions, train: TrainConfig, model: torch.nn.Module, prepared: list[PreparedCase],
                   max_patch_voxels: int) -> list[int]:
    """``[pz, py, px]`` voxels: the user's patch, the minicube plus its context, or one planned from the median
    case shape under ``max_patch_voxels``; one the network's deepest stage can normalise (2 voxels or more)."""
    median = np.median(np.array([c.image.shape[1:] for c in prepared]), axis=0)
    if train.minicube:  # Buchwald et al. (2022): the patch is the cube plus its context
        patch = [c + train.minicube_context for c in train.minicube]
    else:
        patch = options.train.patch_size or plan_patch_size(tuple(median), model.size_divisor, max_patch_voxels,
                                                      options.network.spatial_dims)
    patch = [int(p) for p in patch]
    spatial = patch[-options.network.spatial_dims:]
    check_spatial_size(spatial, model.size_divisor)
    if math.prod(s // d for s, d in zip(spatial, model.size_divisor)) < 2:  # instance norm needs 2 voxels there
        if options.train.patch_size or train.minicube:
            raise ValueError(f"--patch {'x'.join(map(str, spatial))} leaves the deepest stage of the network (which "
                             f"downsamples {'x'.join(map(str, model.size_divisor))}) a single voxel: give a larger "
                             f"patch, e.g. {2 * model.size_divisor[-1]} along one axis, or fewer stages "
                             "(--net-args depth=...)")
        patch[-1] *= 2  # tiny cases: a planned patch gets the one voxel more it needs
    return patch


def _depth_is_planned(options: TrainOptions, train: TrainConfig) -> bool:
    """Whether the depth rule decides the network's stages: a preset with a ``depth``, which the user left unset
    (no ``depth``, ``strides`` or ``kernel_sizes`` in ``--net-args``), a planned patch (no ``--patch``, no
    minicubes) and no transfer (``init_from``: the weights need the source's depth)."""
    spec = NETWORKS.get(options.network.name)
    given = options.network.kwargs
    if spec is None or not isinstance(spec.kwargs(options.network.spatial_dims, **given).get("depth"), int):
        return False
    return not ({"depth", "strides", "kernel_sizes"} & set(given) or options.train.patch_size or train.minicube
                or options.train.init_from)


def _plan_depth(options: TrainOptions, plan: RunPlan, model: torch.nn.Module, patch: list[int],
                prepared: list[PreparedCase], max_patch_voxels: int, spacing, log: Callable[[str], None]
                ) -> tuple[RunPlan, torch.nn.Module, list[int]]:
    """The plan, its network and its patch with the number of stages chosen by
    :func:`voxseg.plan.rules.network_depth_rule` for the patch planned with the preset's depth; with fewer
    stages the patch is planned again for the smaller size divisor (and the depth checked again on it: it only
    decreases), and the strides and kernels for anisotropic voxels again for the new depth. Logged as
    ``planner: network depth: ...`` and added to ``planner_notes``."""
    dims = options.network.spatial_dims
    kwargs = dict(plan.network.kwargs)
    preset_depth = NETWORKS[options.network.name].kwargs(dims, **kwargs)["depth"]
    strides = kwargs.get("strides") or [[2] * dims] * (preset_depth - 1)
    strides = [[s] * dims if isinstance(s, int) else list(s) for s in strides]
    depth = preset_depth
    while True:
        choice = network_depth_rule(patch[-dims:], strides, preset_depth)
        if choice.value >= depth:
            break
        depth = choice.value
        kwargs = {k: v for k, v in plan.network.kwargs.items() if k not in ("strides", "kernel_sizes")}
        kwargs["depth"] = depth
        if spacing:  # strides and kernels for the new depth (said once already for the preset's)
            kwargs = spacing_strides(options, list(spacing)[-dims:], kwargs, lambda _: None)
        plan = dataclasses.replace(plan, network=dataclasses.replace(plan.network, kwargs=kwargs))
        model = build_model(plan)
        patch = _planned_patch(options, plan.train, model, prepared, max_patch_voxels)
    note = Choice(choice.name, depth, choice.reason).note()  # a tiny case's widened patch never adds stages
    log(f"planner: {note}")
    return dataclasses.replace(plan, planner_notes=[*plan.planner_notes, note]), model, patch


def _warn_patch_beyond_cases(options: TrainOptions, plan: RunPlan, prepared: list[PreparedCase], log: Callable[[str], None]) -> None:
    """Say when the user's patch is larger than every (cropped) case along an axis: the rest is zero padding. (A
    planned patch is the median shape rounded up to the divisor: larger by design.)"""
    largest = np.max(np.array([c.image.shape[1:] for c in prepared]), axis=0)
    spatial = plan.train.patch_size[-len(largest):] if options.network.spatial_dims == 3 else plan.train.patch_size[1:]
    too_big = [axis for axis, p, n in zip("zyx" if options.network.spatial_dims == 3 else "yx", spatial, largest[-len(spatial):])
               if p > n]
    if too_big and options.train.patch_size:
        log(f"warning: patch {plan.train.patch_size} is larger than every (cropped) case along {', '.join(too_big)} "
            f"(largest {'x'.join(str(int(n)) for n in largest)}): the rest is zero padding, computed for nothing")
