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
from voxseg.config.knobs import knob
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
        kwargs: overrides of the preset (``base_width``, ``depth``, ``max_width``, ``strides``, ...).
    """

    name: str = knob("unet", flag="--net", choices="networks", group="network",
                     help="network preset ('voxseg nets' lists them)")
    spatial_dims: int = knob(3, flag="--dims", choices=(2, 3), group="network", help="3-D patches or 2-D slices")
    kwargs: dict[str, Any] = knob({}, flag="--net-args", parse="key_values", group="network",
                                  help="preset overrides, e.g. base_width=16,depth=4")


_ISENSEE = "Isensee et al. 2021"
_BUCHWALD = "Buchwald et al. 2022"


@dataclass
class TrainConfig:
    """Optimisation and sampling. Times in minutes, rates per iteration; every field with a flag is described
    by its knob (``voxseg train --help``, ``docs/options.md``), the others here.

    Attributes:
        loss / loss_kwargs: loss spec for ``voxseg.losses.build_loss`` (e.g. ``"dice+ce"``) and its arguments.
        optimizer / optimizer_kwargs: a key of ``voxseg.train.optim.OPTIMIZERS`` and its options. None (a user's
            choice only; a plan holds the name): planned (``voxseg.plan.rules.optimizer_rule``), ``"sgd"`` where
            nothing plans it.
        lr: initial learning rate, scaled over the run by ``schedule`` (a factor of the fraction of the run
            done: of epochs, or of the time budget when that ends first). None (a user's choice only; a
            plan holds the number): planned, 0.01 for sgd, 1e-3 for the others.
        weight_decay: weight decay factor (how it acts: ``voxseg.train.optim.OPTIMIZERS[name].notes``).
        patch_size: ``[pz, py, px]`` voxels for 3-D, ``[1, py, px]`` for 2-D. None (a user's choice only):
            planned from the median case shape, the memory and the time budget.
        foreground_fraction: share of patches centred on a foreground voxel.
        amp: ``"auto"`` (measure: bf16 on a CPU where it is faster, fp16 on CUDA), ``"bf16"``, ``"fp16"``
            (CUDA) or ``"none"``.
        init_from / freeze_stages / unfreeze_after_epochs: transfer learning: a run folder whose weights
            initialise this network where names and shapes match (a head for a different number of classes
            stays random); the first N encoder stages frozen (their norm layers in eval mode) until that epoch.
        plateau_patience / plateau_factor: also multiply the rate by ``factor`` when the validation Dice has
            not improved for this many validations (None: off).
        early_stopping_patience / early_stopping_min_delta: stop when the validation Dice has not improved by
            ``min_delta`` for this many validations (None: off).
        grad_clip: gradient-norm clipping (None or 0: off).
        swa_epochs / swa_every_k_epochs / swa_cycles / swa_lr_fraction: stochastic weight averaging (Izmailov
            et al. 2018) after the main run as Henry et al. (2021): this many more epochs with cyclic rates
            restarting at ``swa_lr_fraction * lr``, weights averaged every ``swa_every_k_epochs``; written as
            ``checkpoint_swa.pt`` (0: off). A time budget ends the main phase, not the SWA phase.
        mode / slices: ``"3d"`` patches, ``"2d"`` slices or ``"2.5d"`` (``slices`` neighbouring slices as
            channels, predicting the centre slice); 2-D modes need a 2-D network.
        flag_cases: after training, flag cases whose loss stays high (Henry et al.'s (2021) filtering) in
            ``flagged_cases.json``; retrain without them with ``--exclude-cases``.
        minicube / minicube_context: train on the fixed partition of each cropped case into cubes of this size
            (voxels), each read with ``minicube_context`` extra voxels (split around it), as Buchwald et al.'s
            (2022) 80x96x96 cubes with 20 voxels of context. The patch is then cube + context. Departure from
            Buchwald et al. (2022): our networks predict every input voxel, so the context voxels are
            supervised too.
        device: where to train: ``"auto"`` (CUDA when available, else the CPU), ``"cpu"`` or ``"cuda"``.
        planned_step_seconds: seconds per training step measured when a time budget planned the patch (set by
            planning, None otherwise); training compares its first epoch's rate with it.
        planned_min_iterations: the iterations the time budget was planned to hold (``--min-iterations``, set with
            ``planned_step_seconds``); training re-plans the patch when its first epoch says far fewer fit.
        val_cases / val_windows / val_seconds: set by planning when whole-volume validation would exceed its
            share of the time budget (None otherwise: every validation case, whole): validate on a seeded, fixed
            ``val_cases`` of the validation cases, ``val_windows`` sliding windows each
            (:func:`voxseg.train.validation.validation_windows`), estimated at ``val_seconds`` per validation.

    An older ``plan.json`` may hold ``flips`` (a switch that did nothing; random flips are the ``"flips"``
    augmentation preset of ``RunPlan.augment``): it is read and dropped.
    """

    loss: str = knob("dice+ce", choices="losses", group="loss",
                     help="loss spec: a registered loss or a weighted sum such as dice+ce or 0.5*dice+1*ce "
                          "('voxseg losses' lists them)")
    loss_kwargs: dict[str, Any] = knob({}, flag="--loss-args", parse="loss_args", group="loss",
                                       help="loss arguments, e.g. alpha=0.3,beta=0.7,gamma=1.33 (tversky.alpha=... "
                                            "addresses one term)")
    optimizer: str | None = knob(None, choices="optimizers", group="optimisation",
                                 shown="planned: adam for large cases in a short budget, else sgd",
                                 help=f"optimiser (sgd: Nesterov momentum 0.99 as {_ISENSEE})")
    lr: float | None = knob(None, range="(0, inf)", group="optimisation", shown="sgd 0.01, others 1e-3",
                            help="initial learning rate")
    weight_decay: float = 3e-5
    epochs: int = knob(100, range="[1, inf)", group="optimisation", help="maximum number of epochs (of --iterations steps); with --time-budget, whichever ends first")
    iterations_per_epoch: int = knob(50, flag="--iterations", range="[1, inf)", group="optimisation",
                                     help="iterations per epoch")
    time_budget_minutes: float | None = knob(None, flag="--time-budget", range="(0, inf)",
                                             group="budget and hardware",
                                             help="minutes of training, validation included: the normal way to "
                                                  "train (give it alone: planning then raises the epochs so that the "
                                                  "budget ends the run); with --epochs, whichever ends first, and "
                                                  "the schedule anneals by whichever ends first")
    batch_size: int = knob(2, range="[1, inf)", group="optimisation", help="patches per step")
    patch_size: list[int] | None = knob(None, flag="--patch", parse="sizes", group="data", shown="planned",
                                        help="patch size in voxels, e.g. 64x64x64 (Y x X with --dims 2)")
    foreground_fraction: float = 1.0 / 3.0
    patch_overhang: float = knob(0.0, range="[0, 0.5]", group="data",
                                 help="how far training patches may reach beyond the cropped volume, as a fraction "
                                      "of the patch (zero-filled there; 0.5: patch centres anywhere in the volume)")
    amp: str = knob("auto", choices=("auto", "bf16", "fp16", "none"), group="budget and hardware",
                    help="mixed precision; auto measures whether bf16 is faster on this CPU (fp16 on CUDA)")
    val_fraction: float = knob(0.2, range="[0, 1)", group="data",
                               help="share of cases held out for validation (by case, seeded)")
    val_every: int = knob(1, range="[1, inf)", group="optimisation", help="validate every N epochs")
    val_backend: str = knob("auto", choices=("auto", "torch", "openvino"), group="budget and hardware",
                            help="what runs the network in validation: auto (OpenVINO on a CPU where a measurement at "
                                 "the first validation says it saves more than converting the network at each "
                                 "validation costs), torch, openvino")
    seed: int = knob(0, group="optimisation", help="seed of the split, sampling, augmentation and initialisation")
    num_threads: int | None = knob(None, flag="--threads", range="[1, inf)", group="budget and hardware",
                                   shown="all cores", help="torch threads")
    init_from: str | None = knob(None, group="network",
                                 help="transfer learning: start from this run's weights (matching names and shapes)")
    freeze_stages: int = knob(0, range="[0, inf)", group="network", help="freeze the first N encoder stages")
    unfreeze_after_epochs: int | None = knob(None, flag="--unfreeze-after", range="[0, inf)", group="network",
                                             help="unfreeze them at this epoch")
    optimizer_kwargs: dict[str, Any] = knob({}, flag="--optimizer-args", parse="key_values", group="optimisation",
                                            help="optimiser options, e.g. momentum=0.9 or k=6,alpha=0.5 (ranger)")
    schedule: str = knob("poly", choices="schedules", group="optimisation",
                         help="learning-rate schedule over the run (epochs or time budget)")
    schedule_kwargs: dict[str, Any] = knob({}, flag="--schedule-args", parse="key_values", group="optimisation",
                                           help="schedule options, e.g. warmup=0.05,restarts=2")
    plateau_patience: int | None = knob(None, flag="--plateau", range="[1, inf)", group="optimisation",
                                        help="halve the rate after N validations without gain")
    plateau_factor: float = 0.5
    early_stopping_patience: int | None = knob(None, flag="--early-stopping", range="[1, inf)",
                                               group="optimisation", help="stop after N validations without gain")
    early_stopping_min_delta: float = 0.0
    grad_clip: float | None = knob(12.0, range="[0, inf)", group="optimisation",
                                   help="gradient-norm clipping (0: off)")
    swa_epochs: int = knob(0, range="[0, inf)", group="optimisation",
                           help="stochastic weight averaging epochs after the main run (Izmailov et al. 2018; "
                                "Henry et al. 2021), written as checkpoint_swa.pt")
    swa_every_k_epochs: int = 3
    swa_cycles: int = 5
    swa_lr_fraction: float = 0.5
    mode: str = knob("3d", choices=("3d", "2d", "2.5d"), group="network", shown="2d with --dims 2, else 3d",
                     help="patches, slices, or 2.5-D stacks of --slices neighbours (2-D modes imply --dims 2)")
    slices: int = knob(3, range="[1, inf)", group="network", help="slices per 2.5-D stack (odd)")
    slice_selection: int | None = knob(None, range="[0, inf)", group="data",
                                       help="2-D modes: slices with foreground plus N empty neighbours "
                                            "(Wang & Tang 2020)")
    channels: list[str] | None = knob(None, parse="names", group="data", shown="all",
                                      help="train on a channel subset by name, e.g. flair or t1ce,t2,flair "
                                           "(Yildiz et al. 2024)")
    loader_workers: int = knob(0, range="[0, inf)", group="budget and hardware",
                               help="processes making batches ahead of the model")
    flag_cases: bool = knob(False, flag="--flag-hard-cases", group="data",
                            help="after training, flag cases whose loss stays high, in flagged_cases.json "
                                 "(Henry et al. 2021)")
    minicube: list[int] | None = knob(None, flag="--minicubes", parse="cube", group="data",
                                      help=f"train on the fixed partition into cubes, e.g. 80x96x96 ({_BUCHWALD})")
    minicube_context: int = knob(0, range="[0, inf)", group="data",
                                 help=f"voxels of context read around each minicube ({_BUCHWALD}: 20)")
    device: str = knob("auto", choices=("auto", "cpu", "cuda"), group="budget and hardware",
                       help="where to train: auto (CUDA when available), cpu, cuda")
    planned_step_seconds: float | None = None
    planned_min_iterations: int | None = None
    val_cases: int | None = None
    val_windows: int | None = None
    val_seconds: float | None = None


@dataclass
class InferenceConfig:
    """Sliding-window settings: overlap fraction, windows per batch, Gaussian blending."""

    overlap: float = 0.5
    batch_size: int = 2
    gaussian: bool = True


_RETIRED_TRAIN_FIELDS = ("flips",)  # a switch that did nothing (flips are an augmentation preset)


def _current_train_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The ``"train"`` values of a ``plan.json`` without the fields voxseg no longer has (old run folders)."""
    return {k: v for k, v in values.items() if k not in _RETIRED_TRAIN_FIELDS}


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
        augment: the augmentation.
        planner_notes: what the planner's rules chose and why, one line each (informative; older plans: empty).
        recipe: the recipe the run's options came from (``voxseg train --recipe``): its name, the values taken
            from it (by flag) and the flags given on the command line instead; empty: none (informative).
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
    planner_notes: list[str] = field(default_factory=list)
    recipe: dict[str, Any] = field(default_factory=dict)

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
            train=TrainConfig(**_typed_fields(TrainConfig, _current_train_fields(data.get("train", {})), "train")),
            inference=InferenceConfig(**_typed_fields(InferenceConfig, data.get("inference", {}), "inference")),
            dataset=data.get("dataset", ""),
            augment=AugmentConfig.from_dict(data["augment"]) if "augment" in data else augmentation_preset("flips"),
            planner_notes=[str(n) for n in data.get("planner_notes", [])],
            recipe=dict(data.get("recipe") or {}),
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
