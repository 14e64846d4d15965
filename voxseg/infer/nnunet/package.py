"""nnU-Net models in voxseg's model package (manifest ``kind`` ``"nnunet"``, the layout in
:mod:`voxseg.infer.package`): the members that hold one (:func:`nnunet_package_members`) and the model read back
from them (:func:`load_nnunet_package`), so ``voxseg predict`` runs a package exactly as the folder it came from.

``nnunet.json`` holds what prediction takes from the checkpoints besides the weights::

    {"configuration": "3d_fullres", "trainer_name": "nnUNetTrainer",
     "folds": {"fold_0": {"checkpoint": "checkpoint_final", "configuration": "3d_fullres",
                          "trainer_name": "nnUNetTrainer", "mirror_axes": [0, 1, 2], "current_epoch": 1000,
                          "shared": {"decoder.encoder.stages.0.0.convs.0.conv.weight": "encoder.stages..."}}}}

``mirror_axes`` is the checkpoint's ``inference_allowed_mirroring_axes`` (``null``: none). ``shared`` maps a
state-dict key to the key whose tensor it shares (nnU-Net's decoder holds its encoder, so the state dict names
each encoder tensor twice); safetensors stores each tensor once, and reading puts the second name back.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from voxseg.errors import InputError
from voxseg.infer.nnunet.model_folder import (NNUNET_CHECKPOINTS, NnunetFold, NnunetModel, choose_nnunet_folds,
                                              is_nnunet_model_folder, load_nnunet_model, nnunet_model)
from voxseg.infer.package import ModelPackage, is_package, open_package, package_kind

__all__ = ["NNUNET_PACKAGE_KIND", "is_nnunet_source", "load_nnunet_package", "load_nnunet_source",
           "nnunet_package_members"]

NNUNET_PACKAGE_KIND = "nnunet"


def is_nnunet_source(path: str | Path) -> bool:
    """Whether ``path`` is an nnU-Net model folder or a model package (zip or unpacked folder) of one; reads only
    the package's manifest (a malformed one raises :class:`~voxseg.errors.InputError`)."""
    path = Path(path)
    if path.exists() and is_package(path):
        return package_kind(path) == NNUNET_PACKAGE_KIND
    return is_nnunet_model_folder(path)


def load_nnunet_source(path: str | Path, folds: str | Sequence[int | str] | None = None,
                       which: str = "best") -> NnunetModel:
    """The model of an nnU-Net model folder (:func:`~voxseg.infer.nnunet.load_nnunet_model`) or of a package of
    one (:func:`load_nnunet_package`); ``folds`` and ``which`` as there."""
    path = Path(path)
    if path.exists() and is_package(path):
        return load_nnunet_package(open_package(path), folds, which)
    return load_nnunet_model(path, folds, which)


def _stem(name: str) -> str:
    return name.removesuffix(".pth")


def nnunet_package_members(model: NnunetModel, checkpoint: str) -> dict[str, bytes]:
    """``plans.json``, ``dataset.json`` (as ``model`` holds them), ``nnunet.json`` and each fold's weights as
    safetensors, for a package of ``model``; ``checkpoint`` is the ``--checkpoint`` name it was read with."""
    from safetensors.torch import save as save_safetensors

    members = {"plans.json": _json_bytes(model.plans), "dataset.json": _json_bytes(model.dataset)}
    folds = {}
    for fold in model.folds:
        tensors, shared = _unique_tensors(fold.weights)
        kind = _stem(fold.path.name)
        members[f"{fold.name}/{kind}.safetensors"] = save_safetensors(tensors, metadata={"checkpoint": kind})
        folds[fold.name] = {"checkpoint": kind, "configuration": fold.configuration,
                            "trainer_name": fold.trainer_name,
                            "mirror_axes": list(fold.mirror_axes) if fold.mirror_axes else None, "shared": shared}
    members["nnunet.json"] = _json_bytes({"configuration": model.configuration_name,
                                          "trainer_name": model.folds[0].trainer_name,
                                          "checkpoint": checkpoint, "folds": folds})
    return members


def _unique_tensors(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Each tensor once (a copy, contiguous, on the CPU), and key -> the first key naming the same tensor."""
    first: dict[tuple, str] = {}
    tensors, shared = {}, {}
    for key, value in state.items():
        ident = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape),
                 tuple(value.stride()), value.dtype)
        if value.numel() and ident in first:
            shared[key] = first[ident]
            continue
        first[ident] = key
        tensors[key] = value.detach().to("cpu").contiguous().clone()
    return tensors, shared


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def load_nnunet_package(package: ModelPackage, folds: str | Sequence[int | str] | None = None,
                        which: str = "best") -> NnunetModel:
    """The model a checked package of kind ``nnunet`` holds; ``folds`` and ``which`` as for a model folder
    (``best``: the package's ``checkpoint_best`` weights, else its ``checkpoint_final``).

    Raises:
        InputError: naming the package: another kind, a fold or checkpoint it does not hold, an ``nnunet.json``
            that does not describe its weights, or weights that safetensors cannot read.
    """
    path = package.path
    if package.kind != NNUNET_PACKAGE_KIND:
        raise InputError(path, f"a {package.kind} package, not an nnU-Net model")
    if which not in NNUNET_CHECKPOINTS:
        raise InputError(path, f"--checkpoint must be one of {', '.join(NNUNET_CHECKPOINTS)} for an nnU-Net "
                               f"model, got {which!r}")
    info = package.json("nnunet.json")
    entries = info.get("folds") if isinstance(info, dict) else None
    if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
        raise InputError(path, "member nnunet.json has no 'folds' object")
    held = {n.split("/")[0]: n for n in package.members if n.endswith(".safetensors")}
    if set(held) != set(entries):
        raise InputError(path, f"member nnunet.json describes folds {', '.join(sorted(entries)) or 'none'}, the "
                               f"package holds weights of {', '.join(sorted(held)) or 'none'}")
    chosen = choose_nnunet_folds({name[len("fold_"):]: name for name in entries}, folds, path)
    read = [_package_fold(package, name, entries[name], held[name], which) for name in chosen]
    return nnunet_model(path, package.json("plans.json"), package.json("dataset.json"), read)


def _package_fold(package: ModelPackage, name: str, entry: dict, member: str, which: str) -> NnunetFold:
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    path = package.path
    wanted = [_stem(NNUNET_CHECKPOINTS[which])] + ([_stem(NNUNET_CHECKPOINTS["final"])] if which == "best" else [])
    held = member.split("/")[1].removesuffix(".safetensors")
    if held not in wanted or entry.get("checkpoint") != held:
        raise InputError(path, f"{name}: holds {held} weights, not {' or '.join(wanted)}; export the model with "
                               f"--checkpoint {which}")
    try:
        weights = load_safetensors(package.members[member])
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        raise InputError(path, f"member {member} is not a readable safetensors file ({exc})") from None
    shared, axes, configuration = entry.get("shared") or {}, entry.get("mirror_axes"), entry.get("configuration")
    if (not isinstance(shared, dict) or any(v not in weights for v in shared.values())
            or not isinstance(configuration, str)
            or not (axes is None or (isinstance(axes, list) and all(isinstance(a, int) for a in axes)))):
        raise InputError(path, f"member nnunet.json: entry {name} is malformed (configuration, mirror_axes or "
                               "shared)")
    weights.update({key: weights[source] for key, source in shared.items()})
    trainer = entry.get("trainer_name")
    return NnunetFold(name, path / member, weights, tuple(axes) if axes else None, configuration,
                      trainer if isinstance(trainer, str) else None)
