"""From a dataset folder to a trained run folder: validate, preprocess (cached), plan, split, train.

Run folder layout::

    RUN/plan.json            the typed plan (channels, labels, preprocessing, network, training)
    RUN/split.json           case ids for training and validation (seeded; editable before --resume)
    RUN/dataset.json         the dataset as voxseg saw it (layout, channel order, cases)
    RUN/preprocessed/        cached preprocessed cases: CASE.image.npy (memory-mapped while training, so a
                             dataset larger than RAM trains), CASE.label.npy, CASE.json (settings, record)
    RUN/preprocessed/minicubes/  with --minicubes: each training case's cubes, cached and mapped the same way
    RUN/log.csv              one row per epoch
    RUN/checkpoint_{last,best}.pt
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import os
import shutil
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from voxseg.data.labels import LabelScheme, check_labels_fit, declared_regions_scheme
from voxseg.data.orientation import check_orientation_code, reoriented_spacing
from voxseg.data.preprocess import (LabelMapping, PreprocessConfig, foreground_intensity_statistics,
                                    preprocess_case)
from voxseg.data.fingerprint import SPACING_TOLERANCE, DatasetFingerprint, dataset_fingerprint
from voxseg.data.sampling import minicube_partition, minicube_starts
from voxseg.errors import InputError, InputProblems
from voxseg.io.datasets import Case, Dataset, load_dataset, read_case
from voxseg.io.validate import CaseSummary, validate_dataset
from voxseg.losses import build_loss
from voxseg.nets import NETWORKS, build_model, check_spatial_size, freeze_encoder
from voxseg.config import NetworkConfig, RunPlan, TrainOptions
from voxseg.io.files import save_json_atomic, write_atomic
from voxseg.plan.plan import plan_patch_size, plan_strides, plan_target_spacing
from voxseg.infer.checkpoint_files import CHECKPOINT_LAST, checkpoint_path
from voxseg.train.distributed import barrier, init_distributed, rank_and_world
from voxseg.train.loop import PreparedCase, TrainResult, train_model
from voxseg.plan.memory import (FRAMEWORK_BYTES, GIB, available_memory, estimate_training_memory,
                                 fit_patch_to_memory)
from voxseg.train.optim import build_optimizer
from voxseg.train.schedules import lr_factor
from voxseg.plan.timing import fit_patch_to_time_budget

__all__ = ["DatasetInvalid", "checked_cases", "checked_patch_size", "split_cases", "kfold_splits", "prepare_cases",
           "run_training"]


class DatasetInvalid(InputProblems):
    """A dataset failed validation; ``problems`` holds one printable line per problem."""


def checked_cases(dataset: Dataset, skip_invalid: bool, log: Callable[[str], None] = print,
                  require_labels: bool = True) -> list[Case]:
    """Validate ``dataset``; refuse it (``DatasetInvalid``) or leave out the failing cases."""
    return _validated(dataset, skip_invalid, log, require_labels)[0]


def _validated(dataset: Dataset, skip_invalid: bool, log: Callable[[str], None] = print,
               require_labels: bool = True) -> tuple[list[Case], dict[str, CaseSummary]]:
    """:func:`checked_cases`, and the validation row of each case kept (its first image's shape, spacing and
    voxel order, its label values), so that nothing validation read is read again."""
    allowed = set(int(v) for v in dataset.label_names) if dataset.label_names else None
    report = validate_dataset(dataset, allowed_labels=allowed, progress=True, require_labels=require_labels)
    problems = report.problems
    if not problems:
        kept = _with_foreground([c for c in dataset.cases if c.label_path is not None or not require_labels],
                                report, dataset, require_labels)
    else:
        lines = [str(p) for p in problems]
        if not skip_invalid:
            raise DatasetInvalid(lines + [f"{dataset.root}: {len(lines)} problem(s); fix them or pass --skip-invalid "
                                          "to leave those cases out"])
        bad = {p.case_id for p in problems}
        for line in lines:
            log(f"skipping: {line}")
        kept = [c for c in dataset.cases if c.case_id not in bad]
        log(f"--skip-invalid: left out {len(bad)} case(s) ({', '.join(sorted(bad))}); {len(kept)} remain")
        if not kept:
            raise InputError(dataset.root, "no valid cases left after --skip-invalid")
        kept = _with_foreground(kept, report, dataset, require_labels)
    ids = {c.case_id for c in kept}
    return kept, {r.case_id: r for r in report.rows if r.case_id in ids}


def _with_foreground(cases: list[Case], report, dataset: Dataset, require_labels: bool) -> list[Case]:
    """Refuse training data whose label maps are all background: it would train to Dice 0 without a word."""
    n = report.background_only({c.case_id for c in cases})
    if require_labels and n:
        raise InputError(dataset.root, f"the label maps of all {n} case(s) hold only background (0): nothing to learn")
    return cases


def split_cases(case_ids: list[str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Seeded split by case: ``{"train": [...], "val": [...]}`` (at least one training case)."""
    ids = sorted(case_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = int(round(len(ids) * val_fraction)) if len(ids) > 1 else 0
    n_val = min(n_val, len(ids) - 1)
    val = sorted(ids[i] for i in order[:n_val])
    return {"train": sorted(set(ids) - set(val)), "val": val}


def _cache_files(cache_dir: Path, case_id: str) -> tuple[Path, Path, Path]:
    """``(image .npy, label .npy, settings .json)`` of one cached case."""
    return (cache_dir / f"{case_id}.image.npy", cache_dir / f"{case_id}.label.npy", cache_dir / f"{case_id}.json")


def _cache_stamp(config: PreprocessConfig, label_values: list[int]) -> str:
    """The settings a cached case was made with (a case cached with others is made again)."""
    return json.dumps({"preprocess": config.to_dict(), "labels": label_values}, sort_keys=True)


def _save_atomic(array: np.ndarray, path: Path) -> None:
    write_atomic(path, lambda f: np.save(f, array, allow_pickle=False))


def _convert_old_cache(cache_dir: Path, case_id: str, stamp: str) -> None:
    """A ``<case>.npz`` cached before 2026-11-25 with the same settings becomes .npy files (not redone)."""
    old = cache_dir / f"{case_id}.npz"
    if not old.exists():
        return
    with np.load(old, allow_pickle=False) as npz:
        if str(npz["stamp"]) != stamp:
            return
        _write_cached(cache_dir, case_id, stamp, npz["image"], npz["label"] if npz["label"].size else None,
                      json.loads(str(npz["record"])))
    old.unlink()


def _load_cached(cache_dir: Path, case_id: str, stamp: str, mapped: bool = True) -> PreparedCase | None:
    """The cached case, its image memory-mapped read-only (``mapped``; the label, 1/16 of the bytes, is read
    into memory so each case holds one open file); None when absent, partial or made with other settings.

    Raises:
        OSError: other than a missing file, e.g. too many open files (EMFILE).
    """
    image_path, label_path, meta_path = _cache_files(cache_dir, case_id)
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("stamp") != stamp:
            return None
        image = np.load(image_path, mmap_mode="r" if mapped else None, allow_pickle=False)
        label = np.load(label_path, allow_pickle=False) if meta.get("has_label") else None
    except (FileNotFoundError, ValueError):
        return None
    return PreparedCase(case_id, image, label)


def _is_cached(cache_dir: Path, item_id: str, stamp: str) -> bool:
    """Whether the item is cached with these settings (its settings file, written last, names them)."""
    try:
        return json.loads(_cache_files(cache_dir, item_id)[2].read_text()).get("stamp") == stamp
    except (FileNotFoundError, ValueError):
        return False


def _write_cached(cache_dir: Path, item_id: str, stamp: str, image: np.ndarray, label: np.ndarray | None,
                  record: dict | None = None) -> None:
    """Cache one item (a case, or a minicube): the arrays first, the settings file that validates them last, so an
    interrupted write is redone, never half read."""
    image_path, label_path, meta_path = _cache_files(cache_dir, item_id)
    meta_path.unlink(missing_ok=True)
    _save_atomic(np.ascontiguousarray(image, dtype=np.float32), image_path)
    if label is not None:
        _save_atomic(np.ascontiguousarray(label), label_path)
    meta = {"stamp": stamp, "has_label": label is not None}
    save_json_atomic(meta if record is None else {**meta, "record": record}, meta_path)


class _CacheReader:
    """Reads cached items memory-mapped until the process runs out of open files (each mapped item keeps one open),
    then into memory, with one warning."""

    def __init__(self, cache_dir: Path, stamp: str, what: str):
        self.cache_dir, self.stamp, self.what, self.mapped = cache_dir, stamp, what, True

    def load(self, item_id: str) -> PreparedCase | None:
        """The cached item, or None when absent, partial or made with other settings."""
        try:
            return _load_cached(self.cache_dir, item_id, self.stamp, self.mapped)
        except OSError as exc:  # out of open files even after raising the limit: hold the rest in memory
            if not self.mapped:
                raise
            self.mapped = False
            warnings.warn(f"{self.cache_dir}: cannot map more cached {self.what} ({exc.strerror}); the rest are held "
                          "in memory (raise 'ulimit -n' to map them all)")
            return _load_cached(self.cache_dir, item_id, self.stamp, self.mapped)


def _raise_open_file_limit(wanted: int) -> None:
    """Raise the soft limit of open files towards the hard one (a mapped case keeps one open)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    except (ImportError, ValueError, OSError):  # not POSIX, or not allowed: keep what there is
        pass


def prepare_cases(cases: list[Case], config: PreprocessConfig, mapping: LabelMapping, cache_dir: Path,
                  progress: bool = True) -> list[PreparedCase]:
    """Read and preprocess cases, reusing the cache in ``cache_dir`` when the settings are unchanged.

    Cached images are uncompressed ``.npy`` files opened memory-mapped (read-only): the cases of a dataset
    larger than RAM are paged in as patches are drawn, instead of all being held in memory (a BraTS case is
    ~50 MB preprocessed, a thousand of them more than most machines have). Labels (uint8, 1/16 of the bytes)
    are held in memory. Each mapped case keeps a file open: the soft open-file limit is raised towards the
    hard one, and cases beyond it are held in memory with a warning. The settings file is written last, so
    an interrupted write is redone, never half read. (``--channels`` subsets of channels that are not
    consecutive copy the cases they use into memory; ``--minicubes`` are cached and mapped the same way.)

    Returns:
        cases with ``(C, Z, Y, X)`` float32 images and ``(Z, Y, X)`` uint8 consecutive labels.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    stamp = _cache_stamp(config, mapping.values)
    _raise_open_file_limit(len(cases) + 1024)
    reader = _CacheReader(cache_dir, stamp, "cases")
    prepared = []
    for case in tqdm(cases, desc="preprocess", unit="case", disable=not progress):
        _convert_old_cache(cache_dir, case.case_id, stamp)
        cached = reader.load(case.case_id)
        if cached is None:
            image, label, geometry = read_case(case, with_label=True)
            consecutive = mapping.to_consecutive(label) if label is not None else None
            result = preprocess_case(image, geometry.spacing, config, label=consecutive, affine=geometry.affine)
            _write_cached(cache_dir, case.case_id, stamp, result.image, result.label, result.record.to_dict())
            del image, result  # what training reads is the file just written (mapped), not this copy
            cached = reader.load(case.case_id)
        prepared.append(cached)
    return prepared


def _label_values(rows: dict[str, CaseSummary], dataset: Dataset) -> list[int]:
    """The run's label values: dataset.json's when it names them, else those validation found in the cases."""
    if dataset.label_names:
        return sorted(int(v) for v in dataset.label_names)
    return sorted({0} | _found_labels(rows))


def _found_labels(rows: dict[str, CaseSummary]) -> set[int]:
    return {int(v) for r in rows.values() for v in (r.label_values or ())}


def _check_run_dir(run_dir: Path, overwrite: bool, resume: bool) -> None:
    """Refuse a run folder that cannot be used, touching nothing (checked before the data is validated)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(run_dir, "exists and is not a folder; name a new run folder")
    if resume:
        if not (run_dir / CHECKPOINT_LAST).exists() and not _is_planned_run(run_dir):
            raise InputError(run_dir, "nothing to resume: no checkpoint_last.pt in this run folder (and not a run "
                                      "planned with --plan-only)")
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise InputError(run_dir, "run folder exists and is not empty; pass --overwrite to replace it "
                                      "or --resume to continue it")
        if not (run_dir / "plan.json").exists():
            raise InputError(run_dir, "refusing to --overwrite a folder that is not a voxseg run (no plan.json)")


def _is_planned_run(run_dir: Path) -> bool:
    """A run folder as ``--plan-only`` made it (plan and split; no log or checkpoint: nothing trained yet), which
    ``--resume`` starts."""
    trained = ("log.csv", CHECKPOINT_LAST, "checkpoint_best.pt", "checkpoint_swa.pt")
    return (run_dir / "plan.json").exists() and (run_dir / "split.json").exists() and not any(
        (run_dir / name).exists() for name in trained)


@contextlib.contextmanager
def _new_run_dir(run_dir: Path):
    """Make a new run in a hidden sibling folder that takes the run folder's name only when the block ends
    well: an option that fails while planning leaves neither a half-made folder nor (with --overwrite) a
    deleted old run. Only called after :func:`_check_run_dir` allowed replacing ``run_dir``."""
    staging = run_dir.with_name(f".{run_dir.name}.new")
    if staging.exists():  # left by a killed run
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if run_dir.exists():
        shutil.rmtree(run_dir)
    staging.rename(run_dir)


def _option_error(run_dir: Path, exc: Exception) -> InputError:
    """One line for an option that cannot be trained with: the exception's own words (a KeyError's key
    without its quotes), and for a value of the wrong type, where such values come from."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    if isinstance(exc, TypeError) and ("not supported between" in text or "argument" in text):
        text += (" (a value in --net-args, --loss-args, --optimizer-args or --schedule-args has the wrong type or "
                 "name: numbers are written as numbers, e.g. alpha=0.3)")
    return InputError(run_dir, f"cannot train with these options: {text}")


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


def _check_plan(plan: RunPlan, run_dir: Path, model: torch.nn.Module | None = None) -> None:
    """Build what training will build (network, loss, optimiser, schedule) and check the numbers, so that a
    bad option is one line here, before the run folder exists, not a traceback after it was made. ``model``:
    the network planning already built for this plan (a throwaway copy: frozen here to check the option)."""
    t = plan.train
    problems = [f"{flag} must be {rule}, got {value}" for flag, value, ok, rule in [
        ("--epochs", t.epochs, t.epochs >= 1, ">= 1"),
        ("--iterations", t.iterations_per_epoch, t.iterations_per_epoch >= 1, ">= 1"),
        ("--batch-size", t.batch_size, t.batch_size >= 1, ">= 1"),
        ("--lr", t.lr, t.lr is not None and t.lr > 0, "> 0"),
        ("--val-every", t.val_every, t.val_every >= 1, ">= 1"),
        ("--time-budget", t.time_budget_minutes, t.time_budget_minutes is None or t.time_budget_minutes > 0, "> 0"),
        ("--slices", t.slices, t.mode != "2.5d" or (t.slices >= 1 and t.slices % 2 == 1), "odd and >= 1"),
        ("--minicubes", t.minicube, t.minicube is None or (len(t.minicube) == 3 and min(t.minicube) >= 1),
         "3 sizes >= 1"),
        ("--minicube-context", t.minicube_context, t.minicube_context >= 0, ">= 0"),
        ("--loader-workers", t.loader_workers, t.loader_workers >= 0, ">= 0"),
        ("--swa-epochs", t.swa_epochs, t.swa_epochs >= 0, ">= 0"),
    ] if not ok]
    if problems:
        raise InputError(run_dir, "; ".join(problems))
    try:
        model = build_model(plan) if model is None else model
        if not t.patch_size or len(t.patch_size) != 3:
            raise ValueError(f"patch {t.patch_size} must be 3 sizes (Z, Y, X; 1 x Y x X for 2-D)")
        check_spatial_size(t.patch_size[-plan.network.spatial_dims:], model.size_divisor)
        if t.freeze_stages:
            try:
                freeze_encoder(model, t.freeze_stages)
            except ValueError as exc:
                raise ValueError(f"--freeze-stages {t.freeze_stages}: {exc}") from None
        build_loss(t.loss, mode=plan.activation, **t.loss_kwargs)
        build_optimizer(t.optimizer, model, t.lr, t.weight_decay, **t.optimizer_kwargs)
        lr_factor(t.schedule, 0.5, **t.schedule_kwargs)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise _option_error(run_dir, exc) from None


# What the benchmarks here found on 2 CPU cores (hippocampus, BraTS, the demo): a U-Net of base width 16 with
# deep supervision and patches of at most 64^3 voxels. nnU-Net's GPU-sized defaults (base 32, 96x96x64 patches)
# cost 4-10x more per iteration (IBSR: 10 s), too few iterations for a CPU budget: hippocampus in 10 minutes,
# 246 iterations and Dice 0.509 against 903 and 0.847 (README). Used when training on a CPU for the "unet"
# preset, under whatever the user sets (--net-args, --patch).
CPU_DEFAULTS = {"unet_kwargs": {"base_width": 16, "deep_supervision": True}, "max_patch_voxels": 64 ** 3}
GPU_MAX_PATCH_VOXELS = 96 * 96 * 64


def _hardware_defaults(options: TrainOptions) -> tuple[dict, int, str]:
    """Network overrides and patch cap for the hardware training will run on, and a note saying what was
    chosen (empty when nothing was)."""
    kwargs = dict(options.network.kwargs)
    if torch.cuda.is_available():
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


def _spacing_strides(options: TrainOptions, spacing: list[float], net_kwargs: dict, log: Callable[[str], None]) -> dict:
    """``net_kwargs`` with a U-Net's strides and kernel sizes planned for voxels of ``spacing`` (mm, the network's
    axes) by :func:`voxseg.plan.plan_strides`, when the preset takes them, the user set neither and the spacing
    is anisotropic (one axis twice as coarse as another); said in one line. A transfer (``init_from``) from a
    network of the same dimensions and depth takes the source run's instead, as its weights need."""
    builder = NETWORKS[options.network.name].builder if options.network.name in NETWORKS else None
    if builder is None or "strides" not in inspect.signature(builder).parameters:
        return net_kwargs
    if "strides" in net_kwargs or "kernel_sizes" in net_kwargs:
        return net_kwargs
    depth = NETWORKS[options.network.name].kwargs(options.network.spatial_dims, **net_kwargs)["depth"]
    if not isinstance(depth, int):  # building the network says what is wrong with it
        return net_kwargs
    source_plan = Path(options.train.init_from) / "plan.json" if options.train.init_from else None
    if source_plan is not None and source_plan.exists():  # transfer: the weights were learnt with the source's
        source = RunPlan.load(source_plan).network
        source_depth = NETWORKS[source.name].kwargs(source.spatial_dims, **source.kwargs).get("depth") \
            if source.name in NETWORKS else None
        if source.spatial_dims == options.network.spatial_dims and source_depth == depth:
            inherited = {k: source.kwargs[k] for k in ("strides", "kernel_sizes") if k in source.kwargs}
            if inherited:
                log(f"strides and kernels: those of the run in --init-from ({source_plan.parent})")
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


def _fit_memory(plan: RunPlan, model: torch.nn.Module, options: TrainOptions, log: Callable[[str], None],
                hint: str = "a smaller --patch or --batch-size") -> None:
    """Shrink a planned patch (then batch) until a training step fits the memory budget; warn when the
    user's own patch does not fit (refuse when they also gave ``--memory``, or it needs more than all the memory
    free). ``hint``: what the user can change, in those messages."""
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    free = available_memory(device_type)
    if options.memory_gib is not None:
        budget, source = int(options.memory_gib * GIB), f"--memory {options.memory_gib:g} GiB"
    else:
        if free is None:
            return
        # Processes on this machine share its RAM; torchrun says how many in LOCAL_WORLD_SIZE.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", rank_and_world()[1])) if device_type == "cpu" else 1
        # This process (torch loaded) already runs: the framework share of an estimate is not new memory.
        budget = int(0.8 * free / max(local, 1)) + (FRAMEWORK_BYTES if device_type == "cpu" else 0)
        source = f"the {budget / GIB:.1f} GiB budget (80% of the memory free{' / processes' if local > 1 else ''})"
    t = plan.train
    if options.train.patch_size is not None or t.minicube:
        spatial = t.patch_size[-plan.network.spatial_dims:]
        estimate = estimate_training_memory(model, (plan.input_channels, *spatial), t.batch_size, t.optimizer,
                                            device_type)
        if estimate.total > budget:
            message = f"patch {t.patch_size} with batch {t.batch_size} needs about {estimate} to train, more than {source}"
            if options.memory_gib is not None:
                raise ValueError(message)
            if free is not None and estimate.total > free + (FRAMEWORK_BYTES if device_type == "cpu" else 0):
                # More than all the memory free: it would only be killed, after preprocessing, mid-step.
                planned = " (or leave --patch out: voxseg plans one that fits)" if "--patch" in hint else ""
                raise ValueError(f"{message}, and more than all {free / GIB:.1f} GiB free: give {hint}{planned}")
            log(f"warning: {message}: it may stop with out-of-memory ({hint} fits)")
        return
    patch, batch, estimate = fit_patch_to_memory(model, plan.input_channels, t.patch_size, t.batch_size, budget,
                                                 model.size_divisor, t.optimizer, device_type)
    if (patch, batch) != (t.patch_size, t.batch_size):
        log(f"memory: patch {t.patch_size} with batch {t.batch_size} would need more than {source}: "
            f"planned patch {patch}, batch {batch} (about {estimate})")
        t.patch_size, t.batch_size = patch, batch
    else:
        log(f"memory: training needs about {estimate} ({source.replace('the ', '', 1)})")


def _fit_time(plan: RunPlan, model: torch.nn.Module, min_iterations: int, log: Callable[[str], None]) -> None:
    """Shrink the planned patch until the time budget holds ``min_iterations`` steps timed here (the memory fit
    came first: a smaller patch needs less), or all the steps the epochs allow when those are fewer."""
    t = plan.train
    min_iterations = min(min_iterations, t.epochs * t.iterations_per_epoch)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    threads = torch.get_num_threads()
    if t.num_threads:  # time with the threads training will use
        torch.set_num_threads(t.num_threads)
    try:
        patch, seconds = fit_patch_to_time_budget(model, plan.input_channels, t.patch_size, t.batch_size,
                                                  60.0 * t.time_budget_minutes, min_iterations, model.size_divisor,
                                                  t.amp, device)
    finally:
        torch.set_num_threads(threads)
    steps = int(60.0 * t.time_budget_minutes / seconds)
    if patch != t.patch_size:
        log(f"time: a step at patch {t.patch_size} would leave the {t.time_budget_minutes:g}-minute budget fewer than "
            f"{min_iterations} iterations: planned patch {patch} ({seconds:.2g} s per step measured here, about "
            f"{steps} steps; --min-iterations sets the target, --patch overrides)")
        t.patch_size = patch
    else:
        log(f"time: {seconds:.2g} s per step at patch {patch} (measured here): about {steps} steps in the "
            f"{t.time_budget_minutes:g}-minute budget")


def _checked_plan(options: TrainOptions, dataset: Dataset, label_values: list[int], prepared: list[PreparedCase],
                  log: Callable[[str], None], run_dir: Path, fingerprint: DatasetFingerprint | None = None) -> RunPlan:
    """:func:`_plan_from_data` then :func:`_check_plan`; an option that cannot be planned is one line naming the run."""
    try:
        patch = checked_patch_size(options.train.patch_size, options.network.spatial_dims)
        options = dataclasses.replace(options, train=dataclasses.replace(options.train, patch_size=patch))
        plan, model = _plan_from_data(options, dataset, label_values, prepared, log, fingerprint)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise _option_error(run_dir, exc) from None
    _check_plan(plan, run_dir, model)
    return plan


def _plan_from_data(options: TrainOptions, dataset: Dataset, label_values: list[int],
                    prepared: list[PreparedCase], log: Callable[[str], None] = print,
                    fingerprint: DatasetFingerprint | None = None) -> tuple[RunPlan, torch.nn.Module]:
    """The run plan: the user's options, with the patch planned from the median case shape, the network size
    and patch cap chosen for the hardware, and a U-Net's strides and kernels for the voxel spacing (the
    resampling target, else the ``fingerprint``'s median), where the user did not set them; and the network it
    planned with (built once, checked again by :func:`_check_plan`)."""
    t = options.train
    lr = t.lr if t.lr is not None else (0.01 if t.optimizer == "sgd" else 1e-3)
    train = dataclasses.replace(t, lr=lr, loss_kwargs=dict(t.loss_kwargs))
    net_kwargs, max_patch_voxels, note = _hardware_defaults(options)
    if note:
        log(note)
    spacing = options.preprocess.target_spacing or (fingerprint.spacing_median if fingerprint else None)
    if spacing:
        net_kwargs = _spacing_strides(options, list(spacing)[-options.network.spatial_dims:], net_kwargs, log)
    if train.mode != "3d" and options.network.spatial_dims != 2:
        raise InputError(dataset.root, f"training mode {train.mode} needs a 2-D network (--dims 2)")
    label_names = {str(v): n for v, n in (dataset.label_names or {}).items()}
    scheme = _label_scheme(options, dataset)
    plan = RunPlan(channel_names=list(dataset.channel_names), label_values=label_values, label_names=label_names,
                   label_scheme=scheme.name, label_regions={k: list(v) for k, v in scheme.region_values.items()},
                   region_labels=list(scheme.region_labels), preprocess=options.preprocess,
                   network=NetworkConfig(options.network.name, options.network.spatial_dims, net_kwargs), train=train,
                   dataset=str(dataset.root), augment=options.augmentation())
    try:
        plan.channel_indices
    except ValueError as exc:
        raise InputError(dataset.root, str(exc)) from None
    model = build_model(plan)
    median = np.median(np.array([c.image.shape[1:] for c in prepared]), axis=0)
    if train.minicube:  # Buchwald et al. (2022): the patch is the cube plus its context
        patch = [c + train.minicube_context for c in train.minicube]
    else:
        patch = options.train.patch_size or plan_patch_size(tuple(median), model.size_divisor, max_patch_voxels,
                                                      options.network.spatial_dims)
    plan.train.patch_size = [int(p) for p in patch]
    spatial = plan.train.patch_size[-options.network.spatial_dims:]
    check_spatial_size(spatial, model.size_divisor)
    if math.prod(s // d for s, d in zip(spatial, model.size_divisor)) < 2:  # instance norm needs 2 voxels there
        if options.train.patch_size or train.minicube:
            raise ValueError(f"--patch {'x'.join(map(str, spatial))} leaves the deepest stage of the network (which "
                             f"downsamples {'x'.join(map(str, model.size_divisor))}) a single voxel: give a larger "
                             f"patch, e.g. {2 * model.size_divisor[-1]} along one axis, or fewer stages "
                             "(--net-args depth=...)")
        plan.train.patch_size[-1] *= 2  # tiny cases: a planned patch gets the one voxel more it needs
    _fit_memory(plan, model, options, log)
    if options.min_iterations and train.time_budget_minutes and not (options.train.patch_size or train.minicube):
        _fit_time(plan, model, options.min_iterations, log)
    largest = np.max(np.array([c.image.shape[1:] for c in prepared]), axis=0)
    spatial = plan.train.patch_size[-len(largest):] if options.network.spatial_dims == 3 else plan.train.patch_size[1:]
    too_big = [axis for axis, p, n in zip("zyx" if options.network.spatial_dims == 3 else "yx", spatial, largest[-len(spatial):])
               if p > n]
    if too_big and options.train.patch_size:  # a planned patch is the median shape rounded up to the divisor: by design
        log(f"warning: patch {plan.train.patch_size} is larger than every (cropped) case along {', '.join(too_big)} "
            f"(largest {'x'.join(str(int(n)) for n in largest)}): the rest is zero padding, computed for nothing")
    return plan, model


def kfold_splits(case_ids: list[str], k: int, seed: int) -> list[dict[str, list[str]]]:
    """Seeded k-fold partition by case: fold i validates on the i-th part and trains on the rest."""
    if not 2 <= k <= len(case_ids):
        raise ValueError(f"need 2 <= folds <= number of cases ({len(case_ids)}), got {k}")
    ids = sorted(case_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    parts = [sorted(ids[i] for i in chunk) for chunk in np.array_split(order, k)]
    return [{"train": sorted(set(ids) - set(part)), "val": part} for part in parts]


def _load_cases_for_resume(dataset: Dataset, run_dir: Path) -> tuple[RunPlan, dict, list[Case]]:
    plan = RunPlan.load(run_dir / "plan.json")
    split = _read_split(run_dir / "split.json")
    wanted = set(split["train"]) | set(split["val"])
    cases = [c for c in dataset.cases if c.case_id in wanted]
    missing = wanted - {c.case_id for c in cases}
    if missing:
        raise InputError(dataset.root, f"cases of the saved split are missing: {', '.join(sorted(missing))}")
    return plan, split, cases


def _read_split(path: Path, folds: bool = False):
    """A (possibly hand-edited) ``split.json`` (``{"train": [ids], "val": [ids]}``) or, with ``folds``, a
    ``splits.json`` (a list of them); anything else is one line naming the file."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None

    def valid(split) -> bool:
        return isinstance(split, dict) and all(
            isinstance(split.get(k), list) and all(isinstance(i, str) for i in split[k]) for k in ("train", "val"))

    ok = (isinstance(data, list) and bool(data) and all(valid(x) for x in data)) if folds else valid(data)
    if not ok:
        shape = '{"train": [case ids], "val": [case ids]}'
        raise InputError(path, f"must hold {'a list of ' if folds else ''}{shape}")
    return data


def _fingerprint(rows: dict[str, CaseSummary], orientation: str | None) -> DatasetFingerprint:
    """Spacings and shapes of the run's cases (their first images, as validation read them), in the run's
    orientation (prediction compares scans with them)."""
    return dataset_fingerprint(*_spacings_and_shapes(rows, orientation))


def _spacings_and_shapes(rows: dict[str, CaseSummary], orientation: str | None
                         ) -> tuple[list[tuple[float, ...]], list[tuple[int, ...]]]:
    """Each case's ``(sz, sy, sx)`` spacing (mm) and ``(Z, Y, X)`` shape in the run's orientation."""
    spacings, shapes = [], []
    for row in rows.values():
        spacing, shape = row.spacing, row.shape
        if orientation and row.orientation and row.orientation != orientation:
            spacing = reoriented_spacing(spacing, row.orientation, orientation)
            # axis lengths move between axes as the spacings do
            shape = tuple(int(round(v)) for v in reoriented_spacing(shape, row.orientation, orientation))
        spacings.append(spacing)
        shapes.append(shape)
    return spacings, shapes


def _resolve_spacing(options: TrainOptions, rows: dict[str, CaseSummary], log) -> TrainOptions:
    """``options`` with the resampling decided (see ``TrainOptions.spacing``): to the spacing the user gave; or,
    when the cases' spacings differ, with ``"auto"`` to nnU-Net's target spacing, otherwise each case keeps its own
    grid; either way one line says so."""
    if options.preprocess.target_spacing is not None:
        return options
    if not isinstance(options.spacing, str):
        target = tuple(float(v) for v in options.spacing)
        return dataclasses.replace(options, preprocess=dataclasses.replace(options.preprocess, target_spacing=target))
    spacings, shapes = _spacings_and_shapes(rows, options.preprocess.orientation)
    target = plan_target_spacing(spacings, shapes, SPACING_TOLERANCE) if spacings else None
    if target is None:
        return options
    sp = np.asarray(spacings, dtype=np.float64)
    ranges = ", ".join(f"{axis} {lo:.3g}-{hi:.3g}" for axis, lo, hi in zip("zyx", sp.min(0), sp.max(0))
                       if hi > SPACING_TOLERANCE * lo)
    shown = " x ".join(f"{v:.3g}" for v in target)
    if str(options.spacing).lower() != "auto":
        log(f"warning: the cases' voxel spacings differ ({ranges} mm): each is trained at its own grid, so the "
            f"network sees the anatomy at several scales; --spacing auto resamples them to {shown} mm (nnU-Net's "
            "target), --spacing Z,Y,X to another (on hippocampus with half the cases at 2 mm slices, resampling to "
            "nnU-Net's target did not help: benchmarks/anisotropic.py)")
        return options
    log(f"spacing: the cases' voxel spacings differ ({ranges} mm): every case is resampled to {shown} mm (Z x Y "
        "x X; nnU-Net's target: the median, the 10th percentile along a much coarser axis), and predictions back "
        "to each scan's own grid")
    return dataclasses.replace(options, preprocess=dataclasses.replace(options.preprocess, target_spacing=tuple(target)))


def _resolve_normalization(options: TrainOptions, dataset: Dataset, cases: list[Case], log,
                           progress: bool = True) -> TrainOptions:
    """``options`` with the intensity normalisation decided (see ``TrainOptions.normalization``), and for CT
    its window and foreground statistics measured on the cases (before any of them is preprocessed: the
    cache depends on them)."""
    name = options.normalization
    if name is None:  # auto: CT for CT datasets unless the preprocessing asks for something other than the default
        all_ct = bool(dataset.channel_names) and all(c.strip().lower() == "ct" for c in dataset.channel_names)
        name = "ct" if all_ct and options.preprocess.normalization == "zscore" else options.preprocess.normalization
        if name == "ct" and options.preprocess.normalization != "ct":
            log("normalisation: ct (dataset.json names every channel CT; --normalization sets another)")
    pre = dataclasses.replace(options.preprocess, normalization=name)
    if pre.ct_window is not None and name != "ct":
        log(f"warning: the CT window {pre.ct_window[0]:g}..{pre.ct_window[1]:g} HU is not used: normalisation is "
            f"{name} (--normalization ct uses it)")
    if name == "ct" and (pre.ct_window is None or pre.ct_mean is None or pre.ct_std is None):
        reading = tqdm(cases, desc="CT intensities", unit="case", disable=not progress)
        pairs = ((image, label) for image, label, _ in (read_case(c, with_label=True) for c in reading))
        try:
            stats = foreground_intensity_statistics(pairs, seed=options.train.seed)
        except ValueError as exc:
            raise InputError(dataset.root, f"CT normalisation: {exc}") from None
        window = pre.ct_window or (round(stats["p00_5"], 2), round(stats["p99_5"], 2))
        if not window[0] < window[1] or not round(stats["std"], 4) > 0:
            raise InputError(dataset.root, f"CT normalisation: the labelled voxels of the {len(cases)} cases all hold "
                                           f"(nearly) one value, {stats['mean']:g}: no window or spread to "
                                           "normalise with; give --ct-window LO,HI, or another --normalization")
        pre = dataclasses.replace(pre, ct_window=window, ct_mean=round(stats["mean"], 4),
                                  ct_std=round(stats["std"], 4))
        log(f"CT normalisation: clip to [{window[0]:g}, {window[1]:g}] HU"
            + ("" if options.preprocess.ct_window else " (0.5th-99.5th percentile of the labelled voxels)")
            + f", then subtract {pre.ct_mean:g} and divide by {pre.ct_std:g} (their mean and std; "
            f"{stats['n']} voxels of the run's {len(cases)} cases, validation included, as nnU-Net does); "
            "saved in plan.json")
    return dataclasses.replace(options, preprocess=pre)


def _resolve_orientation(options: TrainOptions, rows: dict[str, CaseSummary], log) -> TrainOptions:
    """``options`` with the voxel order of its preprocessing decided (see ``TrainOptions.orientation``);
    the cases stored in another order are named, as they are flipped / permuted to it."""
    choice = options.orientation
    target = options.preprocess.orientation
    if target is None and choice is not None and str(choice).lower() not in ("auto", "none"):
        target = check_orientation_code(choice)
    codes = {case_id: row.orientation for case_id, row in rows.items()}
    source_plan = Path(options.train.init_from) / "plan.json" if options.train.init_from else None
    if target is None and str(choice).lower() == "auto" and source_plan is not None and source_plan.exists():
        target = RunPlan.load(source_plan).preprocess.orientation  # weights learnt in that voxel order
        if target:
            log(f"orientation: {target}, the voxel order the run in --init-from was trained in")
    if target is None and str(choice).lower() == "auto":
        counts = Counter(code for code in codes.values() if code)
        target = counts.most_common(1)[0][0] if counts else None  # a tie goes to the first case's order
    if target is not None:
        others = sorted(f"{case_id} ({code})" for case_id, code in codes.items() if code and code != target)
        if others:
            log(f"orientation: {len(others)} of {len(rows)} cases are stored in another voxel order than "
                f"{target}: {', '.join(others[:10])}{' ...' if len(others) > 10 else ''}; they are flipped / "
                f"permuted to {target} (exactly, no interpolation) for training, as every scan is at prediction")
    return dataclasses.replace(options, preprocess=dataclasses.replace(options.preprocess, orientation=target))


def _checked_setup(dataset: Dataset, options: TrainOptions, log
                   ) -> tuple[list[Case], LabelMapping, dict[str, CaseSummary]]:
    """Validated cases, their label mapping, and their validation rows."""
    if options.train.init_from:  # before the run folder is made, so a wrong path leaves nothing behind
        checkpoint_path(options.train.init_from, "best")
    if options.include_cases is not None:  # only these are validated (and reported), e.g. the demo's split
        keep = set(options.include_cases)
        dataset = dataclasses.replace(dataset, cases=[c for c in dataset.cases if c.case_id in keep])
    if options.exclude_cases:
        unknown = sorted(set(options.exclude_cases) - {c.case_id for c in dataset.cases})
        if unknown:
            raise InputError(dataset.root, f"--exclude-cases names case(s) not in this dataset: {', '.join(unknown)}")
    cases, rows = _validated(dataset, options.skip_invalid, log)
    if options.exclude_cases:
        drop = set(options.exclude_cases)
        cases = [c for c in cases if c.case_id not in drop]
        rows = {case_id: row for case_id, row in rows.items() if case_id not in drop}
        log(f"left out {len(drop)} excluded case(s): {', '.join(sorted(drop))}")
    if not cases:
        raise InputError(dataset.root, "no cases left to train on")
    log(f"dataset {dataset.root}: layout {dataset.layout}, {len(cases)} cases, channels "
        f"{', '.join(dataset.channel_names)} (this order is saved with the model)")
    label_values = _label_values(rows, dataset)
    scheme = _label_scheme(options, dataset)
    if scheme.name == "regions":
        log("labels: the regions of dataset.json, one sigmoid output each: "
            + "; ".join(f"{name} {list(values)}" for name, values in scheme.regions.items())
            + " (--label-scheme classes trains each label value as a class instead)")
    if scheme.is_region_based:
        try:
            check_labels_fit(label_values, scheme)
        except ValueError as exc:
            raise InputError(dataset.root, str(exc)) from None
    _warn_absent_labels(scheme, dataset, _found_labels(rows), len(rows), log)
    return cases, LabelMapping(label_values), rows


def _warn_absent_labels(scheme: LabelScheme, dataset: Dataset, found: set[int], n_cases: int, log) -> None:
    """Say which regions (region schemes) or dataset.json labels (classes) no case holds: the network learns
    they never appear, and they score Dice 1 wherever rightly absent (e.g. --label-scheme brats, whose ET
    is 4, on BraTS 2023 labels, whose ET is 3)."""
    if scheme.is_region_based:
        absent = [f"{name} (label {', '.join(map(str, values))})" for name, values in scheme.regions.items()
                  if not set(values) & found]
        hint = (f"; check --label-scheme ({scheme.name}: "
                f"{'; '.join(f'{n} = {list(v)}' for n, v in scheme.regions.items())})")
    else:
        absent = [f"label {v} ({dataset.label_names[v]})" for v in sorted(dataset.label_names or {})
                  if v != 0 and v not in found]
        hint = " (dataset.json names it)"
    if absent and found - {0}:
        log(f"warning: {'; '.join(absent)} occurs in none of the {n_cases} case(s) of {dataset.root}{hint}: the "
            "network learns it never appears, and its Dice counts as 1 wherever it is rightly absent")


def _label_scheme(options: TrainOptions, dataset: Dataset) -> LabelScheme:
    """The user's scheme; unset: the regions the dataset.json declares, else classes."""
    name = options.label_scheme or ("regions" if dataset.label_regions else "classes")
    if name != "regions":
        return LabelScheme(name)
    where = dataset.root / "dataset.json" if dataset.layout == "nnunet" else dataset.root
    if not dataset.label_regions:
        raise InputError(where, "--label-scheme regions takes its regions from an nnU-Net dataset.json (\"labels\" "
                                "entries that list values, e.g. \"whole tumor\": [1, 2, 3]); this dataset declares none")
    return declared_regions_scheme(dataset.label_regions, dataset.region_labels, where)


def _minicubes(cases: list[PreparedCase], cube: list[int], context: int, cache_dir: Path, stamp: str
               ) -> list[PreparedCase]:
    """Each case's fixed partition into cubes (with context), as cases of their own (Buchwald et al. 2022). The cubes are
    cached in ``cache_dir`` as ``.npy`` files opened memory-mapped, like the cases (one case's cubes are in
    memory at a time); ``stamp`` names the preprocessing they come from, so other settings remake them."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    stamp = json.dumps({"cases": stamp, "cube": list(cube), "context": context}, sort_keys=True)
    counts = [len(minicube_starts(case.image.shape[1:], cube)) for case in cases]
    _raise_open_file_limit(len(cases) + sum(counts) + 1024)  # the mapped cases hold one file each too
    reader = _CacheReader(cache_dir, stamp, "minicubes")
    out = []
    for case, n_cubes in zip(cases, counts):
        ids = [f"{case.case_id}#cube{k}" for k in range(n_cubes)]
        if not all(_is_cached(cache_dir, cube_id, stamp) for cube_id in ids):
            images = minicube_partition(case.image, None, cube, context)
            labels = minicube_partition(case.label[None], None, cube, context)
            for cube_id, (img, _), (lbl, _) in zip(ids, images, labels):
                _write_cached(cache_dir, cube_id, stamp, img, lbl[0])
            del images, labels
        out.extend(reader.load(cube_id) for cube_id in ids)
    return out


def _train_in(run_dir: Path, plan: RunPlan, split: dict, prepared: list[PreparedCase], resume: bool,
              progress: bool, log, cube_cache: Path | None = None) -> TrainResult:
    """Train the run in ``run_dir`` on its split of the prepared cases; ``cube_cache``: where ``--minicubes`` are
    cached (default ``run_dir/preprocessed/minicubes``; the folds of a cross-validation share their root's)."""
    resume = resume and (run_dir / CHECKPOINT_LAST).exists()  # without one: a planned run starts here
    by_id = {c.case_id: c for c in prepared}
    train_cases = [by_id[i] for i in split["train"]]
    if plan.train.minicube:
        args = (plan.train.minicube, plan.train.minicube_context, cube_cache or run_dir / "preprocessed" / "minicubes",
                _cache_stamp(plan.preprocess, plan.label_values))
        rank = rank_and_world()[0]
        cubes = _minicubes(train_cases, *args) if rank == 0 else None
        barrier()  # under torchrun, rank 0 writes the cubes and the other ranks map them
        train_cases = cubes if rank == 0 else _minicubes(train_cases, *args)
        log(f"training on {len(train_cases)} fixed minicubes {plan.train.minicube} + {plan.train.minicube_context} "
            f"voxels of context")
    return train_model(plan, train_cases, [by_id[i] for i in split["val"]], run_dir,
                       resume=resume, progress=progress, log=log)


def run_training(data_root: str | Path, run_dir: str | Path, options: TrainOptions, overwrite: bool = False,
                 resume: bool = False, progress: bool = True, log: Callable[[str], None] = print,
                 plan_only: bool = False) -> TrainResult | None:
    """``voxseg train``: validate, preprocess, plan, split, train; everything lands in ``run_dir``.

    With ``plan_only`` it stops (returning None) once the run folder holds its plan, split and preprocessed
    cases: ``plan.json`` can be read, or edited, and ``resume`` then trains the run as that file says.

    With ``options.folds = k`` the run folder holds ``splits.json`` (k seeded folds by case, editable)
    and one complete run folder per fold (``fold_0/`` ...); ``options.fold`` picks one fold or ``"all"``.
    Once every fold has trained, ``voxseg.metrics.evaluate_cross_validation`` evaluates them out of fold and
    chooses post-processing (``voxseg train`` calls it).
    """
    run_dir = Path(run_dir)
    dataset = load_dataset(data_root)
    rank, world = init_distributed()
    if plan_only and (resume or world > 1):
        raise InputError(run_dir, "--plan-only plans a new run in one process (not with --resume or under torchrun)")
    if options.folds:
        if world > 1:
            raise InputError(run_dir, "k-fold cross-validation under torchrun is not supported; train one "
                                      "--fold at a time")
        return _run_folds(dataset, run_dir, options, overwrite, resume, progress, log, plan_only)
    if rank > 0:  # rank 0 validates, preprocesses and plans; the others read its run folder
        barrier()
        plan, split, cases = _load_cases_for_resume(dataset, run_dir)
        prepared = prepare_cases(cases, plan.preprocess, LabelMapping(plan.label_values), run_dir / "preprocessed",
                                 progress=False)
        return _train_in(run_dir, plan, split, prepared, resume, progress, log)
    _check_run_dir(run_dir, overwrite, resume)
    if resume:
        plan, split, cases = _load_cases_for_resume(dataset, run_dir)
        if _is_planned_run(run_dir):  # plan.json may have been edited since --plan-only wrote it
            _check_edited_plan(plan, run_dir / "plan.json", log)
            log(f"starting the planned run: {_plan_summary(plan, split)}")
        prepared = prepare_cases(cases, plan.preprocess, LabelMapping(plan.label_values), run_dir / "preprocessed",
                                 progress)
    else:
        cases, mapping, rows = _checked_setup(dataset, options, log)
        options = _resolve_spacing(_resolve_orientation(options, rows, log), rows, log)
        options = _resolve_normalization(options, dataset, cases, log, progress)
        split = split_cases([c.case_id for c in cases], options.train.val_fraction, options.train.seed)
        with _new_run_dir(run_dir) as staging:
            prepared = prepare_cases(cases, options.preprocess, mapping, staging / "preprocessed", progress)
            fingerprint = _fingerprint(rows, options.preprocess.orientation)
            plan = _checked_plan(options, dataset, mapping.values, prepared, log, run_dir, fingerprint)
            plan.save(staging / "plan.json")
            save_json_atomic(split, staging / "split.json")
            save_json_atomic(dataset.to_dict(), staging / "dataset.json")
            fingerprint.save(staging)
        log(f"plan: {_plan_summary(plan, split)}")
        if plan_only:
            log(_planned_message(run_dir, dataset))
            return None
    barrier()
    return _train_in(run_dir, plan, split, prepared, resume, progress, log)


def _check_edited_plan(plan: RunPlan, plan_path: Path, log: Callable[[str], None]) -> None:
    """What :func:`_check_plan` checks, and that its patch and batch fit the memory free (a warning above 80% of
    it, refused above all of it), for a plan the user may have edited; one line naming ``plan_path``."""
    _check_plan(plan, plan_path)
    options = TrainOptions(network=plan.network, train=plan.train)  # its patch is the user's: checked, not planned
    try:
        _fit_memory(plan, build_model(plan), options, log, hint=f"a smaller patch_size or batch_size in {plan_path.name}")
    except (ValueError, TypeError) as exc:
        raise InputError(plan_path, str(exc)) from None


def _plan_summary(plan: RunPlan, split: dict | None = None) -> str:
    t = plan.train
    budget = f", {t.time_budget_minutes:g}-minute budget" if t.time_budget_minutes else ""
    cases = f"; split {len(split['train'])} train / {len(split['val'])} validation cases" if split else ""
    return (f"{plan.network.name} {plan.network.spatial_dims}D, patch {t.patch_size}, batch {t.batch_size}, loss "
            f"{t.loss}, {t.epochs} epochs x {t.iterations_per_epoch} iterations{budget}, labels {plan.label_values} "
            f"({plan.label_scheme}){cases}")


def _planned_message(run_dir: Path, dataset: Dataset, train_flags: str = "--resume") -> str:
    return (f"planned, not trained: read or edit {run_dir / 'plan.json'}, then train it with "
            f"'voxseg train {dataset.root} --out {run_dir} {train_flags}'")


def _check_fold_choice(fold: str, n_folds: int, run_dir: Path) -> None:
    if fold != "all" and not (str(fold).isdigit() and int(fold) < n_folds):
        raise InputError(run_dir, f"--fold must be 'all' or a fold number 0-{n_folds - 1}, got {fold!r}")


def _run_folds(dataset: Dataset, run_dir: Path, options: TrainOptions, overwrite: bool, resume: bool,
               progress: bool, log, plan_only: bool = False) -> TrainResult | None:
    splits_path = run_dir / "splits.json"
    if resume or (splits_path.exists() and not overwrite):
        # An existing cross-validation: train the requested fold(s) into it, keeping its (edited) splits.
        splits = _read_split(splits_path, folds=True) if splits_path.exists() else None
        if splits is None:
            raise InputError(run_dir, "nothing to resume: no splits.json in this run folder")
        if plan_only:
            raise InputError(run_dir, "holds a cross-validation already (splits.json): train it with --folds "
                                      f"{len(splits)}, or plan it again with --overwrite")
        plan = RunPlan.load(run_dir / "plan.json")
        if not any((run_dir / f"fold_{k}" / CHECKPOINT_LAST).exists() for k in range(len(splits))):
            _check_edited_plan(plan, run_dir / "plan.json", log)  # no fold has trained: it may have been edited
        cases = [c for c in dataset.cases if c.case_id in {i for s in splits for i in s["train"] + s["val"]}]
        mapping = LabelMapping(plan.label_values)
        _check_fold_choice(options.fold, len(splits), run_dir)
        prepared = prepare_cases(cases, plan.preprocess, mapping, run_dir / "preprocessed", progress)
    else:
        _check_run_dir(run_dir, overwrite, resume=False)
        cases, mapping, rows = _checked_setup(dataset, options, log)
        options = _resolve_spacing(_resolve_orientation(options, rows, log), rows, log)
        options = _resolve_normalization(options, dataset, cases, log, progress)
        if not 2 <= options.folds <= len(cases):
            raise InputError(run_dir, f"--folds must be between 2 and the number of cases ({len(cases)}), "
                                      f"got {options.folds}")
        splits = kfold_splits([c.case_id for c in cases], options.folds, options.train.seed)
        _check_fold_choice(options.fold, len(splits), run_dir)
        with _new_run_dir(run_dir) as staging:
            prepared = prepare_cases(cases, options.preprocess, mapping, staging / "preprocessed", progress)
            fingerprint = _fingerprint(rows, options.preprocess.orientation)
            plan = _checked_plan(options, dataset, mapping.values, prepared, log, run_dir, fingerprint)
            plan.save(staging / "plan.json")
            save_json_atomic(splits, staging / splits_path.name)
            save_json_atomic(dataset.to_dict(), staging / "dataset.json")
            fingerprint.save(staging)
        log(f"{len(splits)}-fold cross-validation by case (splits.json); plan: {_plan_summary(plan)}")
        if plan_only:
            log(_planned_message(run_dir, dataset, f"--folds {len(splits)}") + " (--fold N: one fold)")
            return None
    folds = range(len(splits)) if options.fold == "all" else [int(options.fold)]
    result = None
    for k in folds:
        fold_dir = run_dir / f"fold_{k}"
        fold_resume = resume and (fold_dir / CHECKPOINT_LAST).exists()
        if not fold_resume:
            if fold_dir.exists():
                shutil.rmtree(fold_dir)
            fold_dir.mkdir(parents=True)
            plan.save(fold_dir / "plan.json")
            save_json_atomic(splits[k], fold_dir / "split.json")
        log(f"fold {k}: {len(splits[k]['train'])} train / {len(splits[k]['val'])} validation cases")
        result = _train_in(fold_dir, plan, splits[k], prepared, fold_resume, progress, log,
                           cube_cache=run_dir / "preprocessed" / "minicubes")
    return result
