"""An nnU-Net v2 trained-model folder as it lies in ``nnUNet_results``: ``plans.json``, ``dataset.json`` and
``fold_<f>/checkpoint_{final,best,latest}.pth``, read without nnU-Net and without unpickling code.

nnU-Net writes a checkpoint as ``torch.save`` of a dict with ``network_weights`` (the state dict),
``optimizer_state``, ``grad_scaler_state``, ``logging`` (lists of numbers), ``_best_ema``, ``current_epoch``,
``init_args`` (plans, configuration name, fold, dataset.json, a ``torch.device``), ``trainer_name`` and
``inference_allowed_mirroring_axes``. :func:`read_nnunet_checkpoint` reads it with torch's weights-only
unpickler, allowing tensors, plain values, numpy numbers (nnU-Net logs numpy floats) and ``torch.device``;
anything else is refused before it runs.
"""
from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from voxseg.errors import InputError
from voxseg.infer.model_files import _NUMPY_SCALAR_GLOBALS

__all__ = ["NNUNET_CHECKPOINTS", "NnunetFold", "NnunetModel", "choose_nnunet_folds", "is_nnunet_model_folder",
           "load_nnunet_model", "nnunet_model", "read_nnunet_checkpoint"]

NNUNET_CHECKPOINTS = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth", "last": "checkpoint_latest.pth"}
"""``--checkpoint`` name -> nnU-Net's file. voxseg's default ``best`` reads ``checkpoint_final.pth`` (what
``nnUNetv2_predict`` reads) when a fold keeps no ``checkpoint_best.pth``."""

SUPPORTED_CONFIGURATIONS = ("3d_fullres", "3d_lowres", "2d")
_CHECKPOINT_KEYS = {"network_weights", "optimizer_state", "grad_scaler_state", "logging", "_best_ema",
                    "current_epoch", "init_args", "trainer_name", "inference_allowed_mirroring_axes"}


@dataclass
class NnunetFold:
    """One fold's trained network: ``name`` is ``fold_<f>``, ``path`` its checkpoint (named in messages; a
    package's member), ``weights`` the state dict; ``mirror_axes`` the spatial axes (0-based, in the network's
    axis order) nnU-Net mirrors at inference, ``None`` when the checkpoint allows none; ``configuration`` and
    ``trainer_name`` as the checkpoint records them."""

    name: str
    path: Path
    weights: dict[str, torch.Tensor]
    mirror_axes: tuple[int, ...] | None
    configuration: str
    trainer_name: str | None = None


@dataclass
class NnunetModel:
    """A model folder's plans, dataset description, the configuration its checkpoints were trained with, and
    the folds to average.

    Attributes:
        folder: the model folder, or the model package it was read from (named in messages).
        plans: ``plans.json`` as a dict.
        dataset: ``dataset.json`` as a dict (``channel_names``, ``labels``, ``file_ending``, ...).
        configuration_name: ``3d_fullres``, ``3d_lowres`` or ``2d`` (from the checkpoints' ``init_args``).
        configuration: that configuration of the plans, inheritance (``inherits_from``) resolved.
        folds: the networks, in fold order.
    """

    folder: Path
    plans: dict
    dataset: dict
    configuration_name: str
    configuration: dict
    folds: list[NnunetFold]

    @property
    def num_channels(self) -> int:
        names = self.dataset.get("channel_names", self.dataset.get("modality", {}))
        return len(names)

    @property
    def file_ending(self) -> str:
        return self.dataset.get("file_ending", ".nii.gz")


def is_nnunet_model_folder(path: str | Path) -> bool:
    """Whether ``path`` looks like an nnU-Net v2 trained-model folder (plans.json, dataset.json, fold_*; not an
    unpacked model package, which holds ``manifest.json``)."""
    path = Path(path)
    return (path.is_dir() and (path / "plans.json").is_file() and (path / "dataset.json").is_file()
            and not (path / "manifest.json").exists() and any(p.is_dir() for p in path.glob("fold_*")))


def read_nnunet_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an nnU-Net checkpoint without running code from it (see the module docstring).

    Raises:
        InputError: naming ``path``: unreadable, not a dict, objects other than the plain values an nnU-Net
            checkpoint holds, or no ``network_weights``.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals([*_NUMPY_SCALAR_GLOBALS, torch.device]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InputError(path, "holds objects other than tensors and plain values (refused without running them: "
                               "an nnU-Net checkpoint holds weights, numbers, strings and dicts only)") from None
    except FileNotFoundError:
        raise InputError(path, "checkpoint not found") from None
    except OSError as exc:
        raise InputError(path, f"cannot read the checkpoint ({exc.strerror or exc})") from None
    except (RuntimeError, KeyError, ValueError, TypeError, EOFError, IndexError, AttributeError):
        raise InputError(path, "unreadable or truncated checkpoint (corrupt, cut short, or not an nnU-Net "
                               "checkpoint)") from None
    if not isinstance(data, dict) or not isinstance(data.get("network_weights"), dict):
        raise InputError(path, "not an nnU-Net checkpoint (no 'network_weights' dict)")
    extra = sorted(set(data) - _CHECKPOINT_KEYS)
    if extra:
        raise InputError(path, f"not an nnU-Net checkpoint: unexpected entries {', '.join(map(str, extra))}")
    return data


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "not found: an nnU-Net model folder holds plans.json and dataset.json") from None
    except (OSError, ValueError) as exc:
        raise InputError(path, f"unreadable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(path, "expected a JSON object")
    return data


def _resolve_configuration(plans: dict, name: str, source: Path, seen: tuple[str, ...] = ()) -> dict:
    """The plans' configuration ``name`` with ``inherits_from`` resolved (as nnU-Net's PlansManager)."""
    configs = plans.get("configurations", {})
    if name not in configs:
        raise InputError(source, f"configuration {name!r} not in plans.json (it has {', '.join(configs) or 'none'})")
    if name in seen:
        raise InputError(source, f"circular 'inherits_from' through {' -> '.join(seen + (name,))}")
    config = dict(configs[name])
    parent = config.get("inherits_from")
    if parent is not None:
        base = _resolve_configuration(plans, parent, source, seen + (name,))
        base.update(config)
        config = base
    if "architecture" not in config:
        raise InputError(source, f"configuration {name!r} has no 'architecture' (an nnU-Net plans file older "
                                 "than v2.2: re-plan it with nnUNetv2_plan_experiment)")
    return config


def choose_nnunet_folds(found: dict[str, Any], folds: str | Sequence[int | str] | None, source: Path) -> list:
    """The values of ``found`` (fold name after ``fold_`` -> anything) to use: all numbered folds (and ``all``
    only when alone) for ``folds`` ``None`` or ``"all"``, else those asked for (``"0,2"`` or a list), in order.

    Raises:
        InputError: naming ``source``: a fold asked for that is not there, or no fold at all.
    """
    if folds is None or folds == "all":
        numbered = sorted((k for k in found if k.isdigit()), key=int)
        keys = numbered or [k for k in found if k == "all"]
    else:
        keys = [str(f).strip() for f in (folds.split(",") if isinstance(folds, str) else folds)]
        missing = [k for k in keys if k not in found]
        if missing:
            raise InputError(source, f"folds {', '.join(missing)} not found; the model has "
                                     f"{', '.join(sorted('fold_' + k for k in found)) or 'no fold_* folders'}")
    if not keys:
        raise InputError(source, "no fold_* folders with a checkpoint")
    return [found[k] for k in keys]


def _fold_dirs(folder: Path, folds: str | Sequence[int | str] | None) -> list[Path]:
    """The ``fold_*`` folders to use (see :func:`choose_nnunet_folds`)."""
    found = {p.name[len("fold_"):]: p for p in folder.glob("fold_*") if p.is_dir()}
    return choose_nnunet_folds(found, folds, folder)


def _checkpoint_file(fold_dir: Path, which: str) -> Path:
    names = [NNUNET_CHECKPOINTS[which]] + ([NNUNET_CHECKPOINTS["final"]] if which == "best" else [])
    for name in names:
        if (fold_dir / name).is_file():
            return fold_dir / name
    raise InputError(fold_dir, f"no {' or '.join(names)} in this fold")


def _read_fold(fold_dir: Path, which: str) -> NnunetFold:
    path = _checkpoint_file(fold_dir, which)
    data = read_nnunet_checkpoint(path)
    init = data.get("init_args") if isinstance(data.get("init_args"), dict) else {}
    configuration = init.get("configuration")
    if not isinstance(configuration, str):
        raise InputError(path, "no configuration name in the checkpoint's init_args")
    axes = data.get("inference_allowed_mirroring_axes")
    mirror = tuple(int(a) for a in axes) if axes else None
    trainer = data.get("trainer_name")
    return NnunetFold(fold_dir.name, path, data["network_weights"], mirror, configuration,
                      trainer if isinstance(trainer, str) else None)


def load_nnunet_model(folder: str | Path, folds: str | Sequence[int | str] | None = None,
                      which: str = "best") -> NnunetModel:
    """Read a trained-model folder: plans, dataset.json and the chosen folds' checkpoints (on the CPU).

    Args:
        folder: ``nnUNet_results/DatasetXXX_Name/<Trainer>__<Plans>__<configuration>``.
        folds: ``None`` or ``"all"``: every ``fold_<n>`` (``fold_all`` when it is the only one); ``"0,2"`` or
            a list: those folds (``all`` names ``fold_all``).
        which: ``"best"`` (``checkpoint_best.pth``, else ``checkpoint_final.pth``), ``"final"`` or ``"last"``
            (``checkpoint_latest.pth``).

    Raises:
        InputError: missing files, unsupported configuration, folds trained with different configurations, or
            a checkpoint refused by :func:`read_nnunet_checkpoint`.
    """
    folder = Path(folder)
    if not is_nnunet_model_folder(folder):
        raise InputError(folder, "not an nnU-Net model folder (expected plans.json, dataset.json and fold_*/)")
    if which not in NNUNET_CHECKPOINTS:
        raise InputError(folder, f"--checkpoint must be one of {', '.join(NNUNET_CHECKPOINTS)} for an nnU-Net "
                                 f"model, got {which!r}")
    plans, dataset = _read_json(folder / "plans.json"), _read_json(folder / "dataset.json")
    return nnunet_model(folder, plans, dataset, [_read_fold(d, which) for d in _fold_dirs(folder, folds)])


def nnunet_model(source: Path, plans: dict, dataset: dict, read: list[NnunetFold]) -> NnunetModel:
    """The model of ``plans``, ``dataset`` (``dataset.json``) and the folds ``read``, from a model folder or a
    model package (``source``, named in messages): the folds' configuration checked and resolved.

    Raises:
        InputError: folds trained with different configurations, an unsupported one, or a cascade stage.
    """
    folder = source
    names = {f.configuration for f in read}
    if len(names) != 1:
        raise InputError(folder, f"the folds were trained with different configurations: {', '.join(sorted(names))}")
    name = names.pop()
    if name not in SUPPORTED_CONFIGURATIONS:
        raise InputError(read[0].path, f"configuration {name!r} is not supported (voxseg runs "
                                       f"{', '.join(SUPPORTED_CONFIGURATIONS)}; cascades are not)")
    config = _resolve_configuration(plans, name, folder / "plans.json")
    if config.get("previous_stage"):
        raise InputError(folder / "plans.json", f"{name!r} is a cascade stage; voxseg runs it only alone")
    return NnunetModel(folder, plans, dataset, name, config, read)
