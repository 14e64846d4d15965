"""The run plan: every choice a run makes, typed, saved as ``plan.json`` beside the model.

A run folder's ``plan.json`` alone reproduces the run: dataset channels and labels, preprocessing,
network, patch and batch, loss, optimiser, schedule, budget and seed.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxseg.io.files import save_json_atomic
from voxseg.data.augment import AugmentConfig, Flip
from voxseg.data.labels import LabelScheme
from voxseg.data.network_input import channel_indices
from voxseg.data.preprocess import PreprocessConfig
from voxseg.errors import InputError

__all__ = ["NetworkConfig", "TrainConfig", "InferenceConfig", "RunPlan", "augmentation_preset", "AUGMENTATION_PRESETS"]

AUGMENTATION_PRESETS = ("none", "flips", "default")


def augmentation_preset(name: str) -> AugmentConfig:
    """``"none"``, ``"flips"`` (random flips of every axis, the light default) or ``"default"`` (the full
    nnU-Net-like chain of :class:`voxseg.data.augment.AugmentConfig`)."""
    full = AugmentConfig()
    if name == "default":
        return full
    off = {t.name: 0.0 for t in full.transforms()}
    if name == "none":
        return full.replace(**off)
    if name == "flips":
        return full.replace(**{**off, "flip": Flip().p})
    raise ValueError(f"unknown augmentation preset {name!r}; choose one of {', '.join(AUGMENTATION_PRESETS)}")


@dataclass
class NetworkConfig:
    """Which network and how big.

    Attributes:
        name: a key of ``voxseg.nets.NETWORKS`` (``voxseg nets`` lists them).
        spatial_dims: 3 (patches) or 2 (slices, predicted slice by slice).
        kwargs: overrides of the preset (``base_width``, ``depth``, ``max_width``, ...).
    """

    name: str = "unet"
    spatial_dims: int = 3
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Optimisation and sampling. Times in minutes, rates per iteration.

    Attributes:
        loss: loss spec for ``voxseg.losses.build_loss`` (e.g. ``"dice+ce"``).
        loss_kwargs: extra loss arguments (``alpha``, ``beta``, ``gamma``...).
        optimizer: ``"sgd"`` (Nesterov, momentum 0.99) or ``"adam"``.
        lr: initial learning rate; decays with the poly schedule ``lr * (1 - t)^0.9`` where ``t``
            is the fraction of the run done (of epochs, or of the time budget when that ends first).
        weight_decay: L2 penalty.
        epochs: maximum number of epochs.
        iterations_per_epoch: optimiser steps per epoch.
        time_budget_minutes: stop cleanly after this many minutes of training (None: no limit).
        batch_size: patches per step.
        patch_size: ``(pz, py, px)`` voxels for 3-D, ``(1, py, px)`` for 2-D.
        foreground_fraction: share of patches centred on a foreground voxel.
        patch_overhang: how far a training patch may reach beyond the (cropped) volume, as a fraction
            of the patch per axis, zero-filled there (0: inside; 0.5: centres anywhere in the volume).
        flips: random flips along every spatial axis.
        amp: ``"auto"`` (measure: bf16 on a CPU where it is faster, fp16 on CUDA), ``"bf16"``, ``"fp16"``
            (CUDA) or ``"none"``.
        device: where to train: ``"auto"`` (CUDA when available, else the CPU), ``"cpu"`` or ``"cuda"``.
        val_fraction: share of cases held out for validation (split by case, seeded).
        val_every: validate every this many epochs.
        seed: seed of the split, sampling, augmentation and initialisation.
        num_threads: torch threads (None: all cores).
        init_from: transfer learning: a run folder whose weights initialise this network where names
            and shapes match (a head for a different number of classes stays random).
        freeze_stages: freeze the first N encoder stages (their norm layers stay in eval mode).
        unfreeze_after_epochs: unfreeze them at the start of this epoch (None: never).
        optimizer_kwargs: options of the optimiser (``voxseg.train.optim.OPTIMIZERS``: sgd, adam, adamw,
            adadelta, radam, ranger).
        schedule / schedule_kwargs: learning-rate factor as a function of the fraction of the run done
            (``voxseg.train.schedules.SCHEDULES``: poly, cosine with warm-up and restarts, flat_cosine,
            constant).
        plateau_patience / plateau_factor: also multiply the rate by ``factor`` when the validation
            Dice has not improved for this many validations (None: off).
        early_stopping_patience / early_stopping_min_delta: stop when the validation Dice has not
            improved by ``min_delta`` for this many validations (None: off).
        grad_clip: gradient-norm clipping (None: off).
        swa_epochs: stochastic weight averaging phase after the main run (Henry et al. 2021): this many more
            epochs with cyclic rates restarting at ``swa_lr_fraction * lr``, weights averaged every
            ``swa_every_k_epochs``; written as ``checkpoint_swa.pt`` (0: off). A time budget ends the
            main phase, not the SWA phase.
        mode: ``"3d"`` patches, ``"2d"`` slices or ``"2.5d"`` (``slices`` neighbouring slices as channels,
            predicting the centre slice); 2-D modes need a 2-D network.
        slice_selection: 2-D modes: train on slices with foreground plus this many empty neighbours
            (Wang & Tang 2020); None: all slices.
        channels: train (and predict) on this subset of channels, by name (Yildiz et al. 2024: FLAIR alone...).
        loader_workers: worker processes making batches ahead of the model (0: in the training process).
        flag_cases: after training, flag cases whose loss stays high (Henry et al.'s (2021) filtering) in
            ``flagged_cases.json``; retrain without them with ``--exclude-cases``.
        minicube / minicube_context: train on the fixed partition of each cropped case into cubes of this
            size (voxels), each read with ``minicube_context`` extra voxels (split around it) — Buchwald et al.'s (2022)
            80x96x96 cubes with 20 voxels of context. The patch is then cube + context. Departure from
            Buchwald et al. (2022): our networks predict every input voxel, so the context voxels are supervised too.
    """

    loss: str = "dice+ce"
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"
    lr: float = 0.01
    weight_decay: float = 3e-5
    epochs: int = 100
    iterations_per_epoch: int = 50
    time_budget_minutes: float | None = None
    batch_size: int = 2
    patch_size: list[int] = field(default_factory=lambda: [64, 64, 64])
    foreground_fraction: float = 1.0 / 3.0
    patch_overhang: float = 0.0
    flips: bool = True
    amp: str = "auto"
    device: str = "auto"
    val_fraction: float = 0.2
    val_every: int = 1
    seed: int = 0
    num_threads: int | None = None
    init_from: str | None = None
    freeze_stages: int = 0
    unfreeze_after_epochs: int | None = None
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    schedule: str = "poly"
    schedule_kwargs: dict[str, Any] = field(default_factory=dict)
    plateau_patience: int | None = None
    plateau_factor: float = 0.5
    early_stopping_patience: int | None = None
    early_stopping_min_delta: float = 0.0
    grad_clip: float | None = 12.0
    swa_epochs: int = 0
    swa_every_k_epochs: int = 3
    swa_cycles: int = 5
    swa_lr_fraction: float = 0.5
    mode: str = "3d"
    slices: int = 3
    slice_selection: int | None = None
    channels: list[str] | None = None
    loader_workers: int = 0
    flag_cases: bool = False
    minicube: list[int] | None = None
    minicube_context: int = 0


@dataclass
class InferenceConfig:
    """Sliding-window settings: overlap fraction, windows per batch, Gaussian blending."""

    overlap: float = 0.5
    batch_size: int = 2
    gaussian: bool = True


_SCALAR_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def _typed_fields(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    """``values`` for ``cls(**values)``, checked against the dataclass's annotations (int, float, bool, str, lists of
    them, each optionally ``| None``), so that a hand-edited ``"epochs": "10"`` is named here, not met mid-run.

    Raises:
        TypeError: ``where.name must be ..., got ...``.
    """
    annotations = {f.name: f.type for f in dataclasses.fields(cls)}
    for name, value in values.items():
        kind = str(annotations.get(name, "Any"))
        optional = kind.endswith(" | None")
        kind = kind.removesuffix(" | None")
        if value is None and optional:
            continue
        item = kind[len("list["):-1] if kind.startswith("list[") else None
        allowed = _SCALAR_TYPES.get(item or kind)
        if allowed is None:
            continue

        def ok(v: Any, allowed: tuple[type, ...] = allowed) -> bool:
            return isinstance(v, allowed) and (bool in allowed or not isinstance(v, bool))

        if not (all(ok(v) for v in value) if item and isinstance(value, list) else (not item and ok(value))):
            raise TypeError(f"{where}.{name} must be {kind}{' or null' if optional else ''}, got {json.dumps(value)}")
    return values


@dataclass
class RunPlan:
    """Everything a run needs, saved as ``plan.json``.

    Attributes:
        channel_names: channel order the network was trained with (prediction feeds the same order).
        label_values: original label values, sorted, 0 first (class k of the network is value k).
        label_names: names of the label values (from dataset.json when present).
        label_scheme: ``"classes"`` (softmax over labels), ``"brats"`` / ``"brats2023"`` (sigmoid BraTS
            regions) or ``"regions"`` (sigmoid regions of ``label_regions``, e.g. from an nnU-Net dataset.json).
        label_regions / region_labels: scheme ``"regions"`` only: region name -> label values (output
            channel order) and the label painted for each region (see :class:`voxseg.data.LabelScheme`).
        preprocess: cropping, normalisation and resampling.
        network / train / inference: see their classes.
        dataset: the dataset folder the run was trained on (informative).
    """

    channel_names: list[str]
    label_values: list[int]
    label_names: dict[str, str] = field(default_factory=dict)
    label_scheme: str = "classes"
    label_regions: dict[str, list[int]] = field(default_factory=dict)
    region_labels: list[int] = field(default_factory=list)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    dataset: str = ""
    augment: AugmentConfig = field(default_factory=lambda: augmentation_preset("flips"))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["preprocess"] = self.preprocess.to_dict()
        out["augment"] = self.augment.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunPlan":
        data = dict(data)
        return cls(
            channel_names=list(data["channel_names"]),
            label_values=[int(v) for v in data["label_values"]],
            label_names={str(k): str(v) for k, v in data.get("label_names", {}).items()},
            label_scheme=data.get("label_scheme", "classes"),
            label_regions={str(k): [int(v) for v in vs] for k, vs in data.get("label_regions", {}).items()},
            region_labels=[int(v) for v in data.get("region_labels", [])],
            preprocess=PreprocessConfig.from_dict(data.get("preprocess", {})),
            network=NetworkConfig(**data.get("network", {})),
            train=TrainConfig(**_typed_fields(TrainConfig, data.get("train", {}), "train")),
            inference=InferenceConfig(**_typed_fields(InferenceConfig, data.get("inference", {}), "inference")),
            dataset=data.get("dataset", ""),
            augment=AugmentConfig.from_dict(data["augment"]) if "augment" in data else augmentation_preset("flips"),
        )

    def save(self, path: str | Path) -> Path:
        return save_json_atomic(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> "RunPlan":
        """Read a ``plan.json``; one that is missing, not JSON, or (hand-edited) holds an unknown field or a
        training or inference value of the wrong type (:func:`_typed_fields`) is an :class:`~voxseg.errors.InputError`
        naming the file. Values of the right type but out of range are checked where a run starts."""
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise InputError(path, "not found (not a voxseg run folder?)") from None
        except json.JSONDecodeError as exc:
            raise InputError(path, f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise InputError(path, f"not a valid run plan: {what}") from None

    @property
    def channel_indices(self) -> list[int]:
        """Indices (into ``channel_names``) of the channels the network sees
        (:func:`voxseg.data.network_input.channel_indices`)."""
        return channel_indices(self.channel_names, self.train.channels)

    @property
    def input_channels(self) -> int:
        """Network input channels: the channel subset, times the slices of a 2.5-D stack."""
        return len(self.channel_indices) * (self.train.slices if self.train.mode == "2.5d" else 1)

    @property
    def scheme(self) -> LabelScheme:
        """The label scheme (its regions for region schemes; class names are in ``label_names``)."""
        if self.label_scheme == "regions":
            return LabelScheme("regions", region_values=self.label_regions, region_labels=tuple(self.region_labels))
        return LabelScheme(self.label_scheme)

    @property
    def activation(self) -> str:
        """``"sigmoid"`` (one channel per region) for region schemes, else ``"softmax"``."""
        return self.scheme.loss_mode

    @property
    def num_outputs(self) -> int:
        """Output channels of the network: one per class, or one per region for region schemes."""
        scheme = self.scheme
        return len(scheme.regions) if scheme.is_region_based else len(self.label_values)
