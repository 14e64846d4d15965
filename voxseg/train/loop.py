"""The training loop: sample patches, step, validate, checkpoint. Every knob lives in the plan.

``train_model`` composes named parts: the batch stream (:mod:`voxseg.train.batches`), one optimisation step
with mixed precision and the non-finite policy (:mod:`voxseg.train.step`), the learning-rate phases and the
time budget (:mod:`voxseg.train.phases`), validation Dice (:mod:`voxseg.train.validation`), the training
state and its checkpoints (:mod:`voxseg.train.state`, which documents their keys) and case flagging
(:mod:`voxseg.train.case_losses`).

Run folder contents written here: ``checkpoint_last.pt``, ``checkpoint_best.pt``, ``log.csv``; with SWA
``checkpoint_swa.pt``; with case flagging ``case_losses.csv`` and ``flagged_cases.json``.
"""
from __future__ import annotations

import csv
import dataclasses
import itertools
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from voxseg.config import RunPlan, TrainConfig
from voxseg.data.loader import PatchLoader
from voxseg.errors import InputError
from voxseg.infer.backends import ValidationBackend
from voxseg.infer.model_files import CHECKPOINT_BEST, CHECKPOINT_LAST, CHECKPOINT_SWA
from voxseg.infer.package import source_weights
from voxseg.losses import build_loss
from voxseg.nets import freeze_encoder, unfreeze
from voxseg.nets import build_model, resolve_amp
from voxseg.train.batches import PreparedCase, loss_targets, patch_stream
from voxseg.train.case_losses import write_case_flags
from voxseg.train.distributed import barrier, init_distributed, rank0_flag, rank0_object
from voxseg.train.early_stopping import EarlyStopping
from voxseg.train.optim import build_optimizer
from voxseg.train.phases import DONE, MAIN, REPLAN_RATIO, SWA, BudgetProjection, Phases, RunClock, replanned_patch
from voxseg.train.schedules import PlateauScheduler
from voxseg.train.state import TrainState, read_checkpoint, write_checkpoint, write_weights
from voxseg.train.step import TrainingDiverged, TrainStep, grad_scaler
from voxseg.train.swa import SWACollector, recompute_norm_statistics
from voxseg.train.validation import (VALIDATION_SHARE, ValidationSchedule, validation_cases, validation_dice,
                                     validation_windows)

__all__ = ["PreparedCase", "TrainResult", "train_model"]


@dataclass
class TrainResult:
    epochs_done: int
    best_metric: float
    best_epoch: int
    elapsed_minutes: float
    stopped_by: str
    history: list[dict] = field(default_factory=list)
    iterations: int = 0
    model: torch.nn.Module | None = field(default=None, repr=False)  # the final network (this rank's copy)


def train_model(plan: RunPlan, train_cases: list[PreparedCase], val_cases: list[PreparedCase], run_dir: str | Path,
                resume: bool = False, progress: bool = True, device: str | None = None,
                log: Callable[[str], None] = print) -> TrainResult:
    """Train the plan's network on prepared cases, validating on held-out cases each epoch.

    The learning rate follows :class:`voxseg.train.phases.Phases`: the main schedule on the fraction of the run
    done (epochs or time budget, whichever ends first), then the optional SWA phase. Resume is exact for
    epoch-limited runs: weights, optimiser, batch stream and torch RNG are restored from the end of the last
    finished epoch (a time budget makes the schedule depend on the clock).

    Under ``torchrun --nproc_per_node N`` each process trains on its own patches (seed + rank), gradients are
    averaged by DistributedDataParallel (gloo on CPU, NCCL on GPUs) and rank 0 alone validates and writes
    checkpoints and logs.

    Args:
        plan: the run plan (saved by the caller as ``run_dir/plan.json``).
        train_cases / val_cases: preprocessed cases (labels consecutive).
        run_dir: folder for checkpoints and ``log.csv``.
        resume: continue from ``checkpoint_last.pt`` with optimiser, schedule and RNG states.
        progress: show a progress bar (loss, Dice, ETA).
        device: ``"cpu"``, ``"cuda"``; default: CUDA when available.
    """
    run_dir, cfg = Path(run_dir), plan.train
    rank, world = init_distributed(device)
    log = log if rank == 0 else (lambda message: None)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = _build_model(plan, resume, dev, world, log)
    loss_fn = build_loss(cfg.loss, mode=plan.activation, **cfg.loss_kwargs)
    optimizer = build_optimizer(cfg.optimizer, model, cfg.lr, cfg.weight_decay, **cfg.optimizer_kwargs)
    parts = _checkpointed_parts(cfg, model, dev)
    state = _resume(run_dir / CHECKPOINT_LAST, model, optimizer, parts, cfg, log) if resume else TrainState()
    step = TrainStep(_distributed(model, cfg, world), optimizer, loss_fn, amp=cfg.amp, device=dev,
                     grad_clip=cfg.grad_clip, deep_supervision=_deep(model), world=world, scaler=parts["scaler"])
    clock = RunClock(cfg.time_budget_minutes, state.elapsed_seconds)
    s = _Session(plan, model, optimizer, step, Phases(cfg, parts["plateau"]), parts,
                 patch_stream(plan, train_cases, seed=cfg.seed + 1000 * rank, start_batch=state.iterations), clock,
                 BudgetProjection(cfg.time_budget_minutes, cfg.planned_step_seconds,
                                  1.0 - VALIDATION_SHARE if val_cases else 1.0),
                 ValidationSchedule(cfg.val_every, clock.budget_s, estimate_s=cfg.val_seconds),
                 _Progress(cfg, state, clock, progress and rank == 0),
                 dev, rank, world, run_dir, log)
    stopped_by = "epochs"
    val_cases = validation_cases(val_cases, plan) if rank == 0 else val_cases  # planning's fixed subset, if any
    s.val_windows = [validation_windows(c, plan) for c in val_cases] if rank == 0 else []
    s.val_backend = ValidationBackend(cfg.val_backend)
    try:
        step.net.train()
        for epoch in itertools.count(state.epoch):
            phase = s.phases.of_epoch(epoch, state.stopped_main, state.swa_done)
            if phase == DONE:
                break
            _unfreeze_if_due(model, cfg, epoch, log)
            losses, lr, budget_spent = _train_epoch(s, state, epoch, phase)
            stopped_by = "time budget" if budget_spent else stopped_by
            stopped_by = _end_epoch(s, state, epoch, phase, losses, lr, stopped_by, val_cases)
            if epoch == 0 and phase == MAIN and stopped_by == "epochs":
                _replan_if_slow(s, state, train_cases, val_cases)
        _write_swa_model(s, state)
    finally:
        s.progress.close()
        s.loader.close()  # its worker processes, when there are any
    return _finish(s, state, stopped_by, train_cases, val_cases)


@dataclass
class _Session:
    """The parts one process trains with, built once by ``train_model`` (the run's progress is a TrainState)."""

    plan: RunPlan
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    step: TrainStep
    phases: Phases
    parts: dict  # what the checkpoint keeps besides model and optimiser: plateau, early_stopping, swa, scaler
    loader: PatchLoader
    clock: RunClock
    projection: BudgetProjection
    validation: ValidationSchedule
    progress: _Progress
    device: torch.device
    rank: int
    world: int
    run_dir: Path
    log: Callable[[str], None]
    val_windows: list = field(default_factory=list)  # per validation case: the windows scored (None: all)
    val_backend: ValidationBackend = field(default_factory=ValidationBackend)


class _Progress:
    """The progress bar. With a time budget that binds it counts seconds of the budget (its ETA is then the true
    end time), otherwise iterations; its postfix shows the iteration, recent loss, best validation Dice and rate."""

    def __init__(self, cfg: TrainConfig, state: TrainState, clock: RunClock, enabled: bool):
        total_iters = cfg.epochs * cfg.iterations_per_epoch
        self.by_time = clock.budget_s < total_iters * 60.0  # a budget under a minute per iteration binds first
        self.epochs = cfg.epochs
        # A bar only on a terminal; into a log file one plain line per epoch instead (end_epoch).
        self.plain = enabled and not _is_terminal(sys.stderr)
        self.bar = tqdm(total=int(clock.budget_s) if self.by_time else total_iters,
                        initial=int(state.elapsed_seconds) if self.by_time else state.epoch * cfg.iterations_per_epoch,
                        disable=not enabled or self.plain, unit="s" if self.by_time else "it", dynamic_ncols=True,
                        desc="train",
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}{postfix}]")

    def update(self, state: TrainState, losses: list[float], lr: float, elapsed_s: float) -> None:
        # A budgeted bar stops at its total: the last step may end a little past the budget.
        self.bar.update(min(int(elapsed_s), self.bar.total) - self.bar.n if self.by_time else 1)
        recent = float(np.mean(losses[-20:])) if losses else math.nan
        best = state.best_metric
        self.bar.set_postfix_str(f"it {state.iterations}, loss {recent:.3f}, best val Dice {best:.3f}, lr {lr:.2g}"
                                 if best >= 0 else f"it {state.iterations}, loss {recent:.3f}, lr {lr:.2g}")

    def end_epoch(self, row: dict, log: Callable[[str], None]) -> None:
        """Without a bar: one line for the epoch in ``row`` (a ``log.csv`` row), e.g.
        ``epoch 3/100: 150 iterations, loss 0.412, val Dice 0.731, lr 0.0097, 1.2 min``."""
        if not self.plain:
            return
        dice = f", val Dice {row['val_dice_mean']:.3f}" if "val_dice_mean" in row else ""
        log(f"epoch {row['epoch']}/{self.epochs}: {row['iterations']} iterations, loss {row['train_loss']:.3f}"
            f"{dice}, lr {row['lr']:.2g}, {row['minutes']:.1f} min")

    def close(self) -> None:
        self.bar.close()


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def _build_model(plan: RunPlan, resume: bool, dev: torch.device, world: int, log) -> torch.nn.Module:
    """The network on ``dev``: seeded (same initial weights on every rank), then ``--init-from`` and frozen
    encoder stages as the plan says."""
    cfg = plan.train
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    model = build_model(plan)
    if cfg.init_from and not resume:
        _init_from(model, cfg.init_from, log)
    if cfg.freeze_stages:
        freeze_encoder(model, cfg.freeze_stages)
        log(f"froze the first {cfg.freeze_stages} encoder stage(s)"
            + (f" until epoch {cfg.unfreeze_after_epochs}" if cfg.unfreeze_after_epochs else ""))
    model = model.to(dev)
    log(f"mixed precision: {cfg.amp} -> {resolve_amp(cfg.amp, dev)} on {dev.type} with {torch.get_num_threads()} "
        f"threads x {world} process(es); {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    return model


def _init_from(model: torch.nn.Module, run_dir: str, log: Callable[[str], None]) -> None:
    """Transfer learning: copy weights from another run (a run folder or a model package) where names and shapes
    match (a new head stays random)."""
    source, path = source_weights(run_dir)
    own = model.state_dict()
    matched = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    own.update(matched)
    model.load_state_dict(own)
    log(f"initialised {len(matched)}/{len(own)} tensors from {path} (others, e.g. a re-sized head, stay random)")


def _deep(model: torch.nn.Module) -> bool:
    return bool(getattr(model, "deep_supervision", False))


def _checkpointed_parts(cfg: TrainConfig, model: torch.nn.Module, dev: torch.device) -> dict:
    """The stateful helpers a checkpoint keeps, by checkpoint key (None: not used by this run)."""
    return {"plateau": PlateauScheduler(cfg.lr, factor=cfg.plateau_factor, patience=cfg.plateau_patience)
            if cfg.plateau_patience else None,
            "early_stopping": EarlyStopping(patience=cfg.early_stopping_patience,
                                            min_delta=cfg.early_stopping_min_delta)
            if cfg.early_stopping_patience else None,
            "swa": SWACollector(model, every_k_epochs=cfg.swa_every_k_epochs) if cfg.swa_epochs else None,
            "scaler": grad_scaler(cfg.amp, dev)}


def _resume(path: Path, model, optimizer, parts: dict, cfg: TrainConfig, log) -> TrainState:
    state = read_checkpoint(path, model, optimizer, parts, cfg.iterations_per_epoch)
    log(f"resumed from epoch {state.epoch} ({state.elapsed_seconds / 60:.1f} min trained)")
    return state


def _distributed(model: torch.nn.Module, cfg: TrainConfig, world: int) -> torch.nn.Module:
    """The module the steps run: the model, or under DDP its DistributedDataParallel wrapper."""
    if world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    # Unused in a step: frozen stages, and the coarsest deep-supervision head (weight 0, as in nnU-Net).
    return DistributedDataParallel(model, find_unused_parameters=bool(cfg.freeze_stages) or _deep(model))


def _unfreeze_if_due(model: torch.nn.Module, cfg: TrainConfig, epoch: int, log) -> None:
    if cfg.freeze_stages and cfg.unfreeze_after_epochs is not None and epoch == cfg.unfreeze_after_epochs:
        unfreeze(model)
        log(f"epoch {epoch}: unfroze the encoder")


def _train_epoch(s: _Session, state: TrainState, epoch: int, phase: str) -> tuple[list[float], float, bool]:
    """The iterations of one epoch. Returns the finite losses, the last learning rate, and whether the time
    budget ran out (main phase only; rank 0's clock decides for every rank), less the time the final validation
    is expected to take (:meth:`ValidationSchedule.reserve_s`)."""
    losses: list[float] = []
    lr = math.nan
    for it in range(s.plan.train.iterations_per_epoch):
        lr = s.phases.lr(phase, epoch, it, s.clock.seconds(), state.swa_done)
        x, y = next(s.loader)
        x, y = torch.from_numpy(x).to(s.device), loss_targets(y, s.plan).to(s.device)
        try:
            loss = s.step(x, y, lr)
        except TrainingDiverged as err:
            raise InputError(s.run_dir, f"training diverged: the loss was not a number for {err.in_a_row} "
                             f"iterations in a row (from iteration {state.iterations - err.in_a_row + 2}, "
                             f"learning rate {lr:.3g}); lower --lr (and keep --grad-clip on). The "
                             "checkpoints saved before stay in the run folder") from None
        if math.isfinite(loss):
            losses.append(loss)
        state.iterations += 1
        said = s.projection.after_step(state.iterations, s.clock.seconds(), phase,
                                       last_of_epoch=it == s.plan.train.iterations_per_epoch - 1)
        if said:
            s.log(said)
        s.progress.update(state, losses, lr, s.clock.seconds())
        # The budget ends early enough for the final validation to end within it.
        if phase == MAIN and rank0_flag(s.clock.spent(s.validation.reserve_s()), s.world, s.device):
            return losses, lr, True
    return losses, lr, False


def _end_epoch(s: _Session, state: TrainState, epoch: int, phase: str, losses: list[float], lr: float,
               stopped_by: str, val_cases: list[PreparedCase]) -> str:
    """After an epoch: the SWA snapshot; on rank 0 validation (when due), ``log.csv`` and ``checkpoint_last.pt``.
    Returns why training stops, as rank 0 says (``"epochs"``: it goes on to the end of its phases)."""
    cfg = s.plan.train
    state.epoch = epoch + 1
    row = {"epoch": state.epoch, "iterations": state.iterations, "lr": lr,
           "train_loss": float(np.mean(losses)) if losses else math.nan, "minutes": s.clock.seconds() / 60.0}
    is_last = stopped_by == "time budget" or state.epoch == cfg.epochs
    if phase == SWA:
        state.swa_done += 1
        s.parts["swa"].epoch_end(state.swa_done, last=state.swa_done >= cfg.swa_epochs)
    if s.rank == 0:
        if val_cases and phase == MAIN and s.validation.due(state.epoch, s.clock.seconds(), is_last) \
                and _validate(s, state, val_cases, row):
            stopped_by = "early stopping"
        state.history.append(row)
        _append_log(s.run_dir / "log.csv", row)
        s.progress.end_epoch(row, s.log)
    stopped_by = rank0_object(stopped_by, s.world)
    state.stopped_main = state.stopped_main or stopped_by != "epochs"  # the SWA phase may still follow
    if s.rank == 0:
        state.elapsed_seconds = s.clock.seconds()
        write_checkpoint(s.run_dir / CHECKPOINT_LAST, s.model, s.optimizer, state, s.parts)
    barrier()
    return stopped_by


def _replan_if_slow(s: _Session, state: TrainState, train_cases: list[PreparedCase],
                    val_cases: list[PreparedCase]) -> None:
    """After the run's first epoch (single process): when its rate was over :data:`REPLAN_RATIO` times slower than
    the step planning timed and the budget left no longer holds the planned iterations, train on with the patch
    :func:`replanned_patch` shrinks to hold them (new batch stream and validation windows, ``plan.json``
    rewritten). A busy machine at planning time errs the other way (a smaller patch than needed) and is kept."""
    cfg = s.plan.train
    planned, measured = cfg.planned_step_seconds, s.projection.first_epoch_seconds
    if s.world != 1 or not (planned and cfg.planned_min_iterations and measured) or measured <= REPLAN_RATIO * planned:
        return
    left = s.projection.train_share * s.clock.budget_s - s.clock.seconds()
    wanted = cfg.planned_min_iterations - state.iterations
    if wanted <= 0 or left <= 0 or left / measured >= wanted:
        return
    patch = replanned_patch(cfg.patch_size, list(s.model.size_divisor), measured, left, wanted)
    if patch == cfg.patch_size:
        return
    s.log(f"time: the first epoch ran at {measured:.2g} s per iteration, {measured / planned:.1f}x the {planned:.2g} s "
          f"measured when planning: the budget left holds about {int(left / measured)} of the "
          f"{cfg.planned_min_iterations} planned iterations; re-planned the patch {cfg.patch_size} -> {patch}")
    s.plan = dataclasses.replace(s.plan, train=dataclasses.replace(cfg, patch_size=patch))
    s.loader.close()
    s.loader = patch_stream(s.plan, train_cases, seed=cfg.seed, start_batch=state.iterations)
    s.val_windows = [validation_windows(c, s.plan) for c in val_cases]
    s.plan.save(s.run_dir / "plan.json")


def _validate(s: _Session, state: TrainState, val_cases: list[PreparedCase], row: dict) -> bool:
    """Score the validation cases into ``row``; keep the best checkpoint, step the plateau scheduler. Returns
    whether early stopping says stop. Its duration goes to the validation schedule."""
    start = s.clock.seconds()
    used = s.val_backend.last
    dice = validation_dice(s.model, s.plan, val_cases, s.device, s.val_windows, s.val_backend)
    s.validation.record(s.clock.seconds() - start)
    if s.val_backend.last != used:
        s.log(_validation_backend_line(s.val_backend))
    mean_dice = float(np.mean(list(dice.values()))) if dice else 0.0
    row.update({f"val_dice_{k}": v for k, v in dice.items()})
    row["val_dice_mean"] = mean_dice
    if mean_dice > state.best_metric:
        state.best_metric, state.best_epoch = mean_dice, state.epoch
        write_weights(s.run_dir / CHECKPOINT_BEST, s.model, state.epoch, val_dice=dice)
    if s.parts["plateau"] is not None:
        s.parts["plateau"].step(mean_dice)
    early = s.parts["early_stopping"]
    return early is not None and early.update(mean_dice)


def _validation_backend_line(backend: ValidationBackend) -> str:
    """One log line: what validation runs on, and the measurement that chose it."""
    line = f"validation runs on {backend.last}"
    seconds = (backend.measured or {}).get("seconds")
    if seconds and seconds["openvino"] is not None:
        line += (f" (a batch of windows: {seconds['torch']:.2f} s in PyTorch, {seconds['openvino']:.2f} s in OpenVINO; "
                 f"converting the network at each validation: {seconds['convert']:.1f} s)")
    return line


def _append_log(path: Path, row: dict) -> None:
    """Append a row to ``log.csv``; the header is fixed by the first row (missing values left blank)."""
    fields = list(row)
    if path.exists():
        with path.open(newline="") as fh:
            fields = next(csv.reader(fh), fields)
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, restval="", extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)


def _write_swa_model(s: _Session, state: TrainState) -> None:
    """Rank 0, after an SWA phase: the averaged weights, batch-norm statistics recomputed on 16 training batches,
    as ``checkpoint_swa.pt``."""
    swa = s.parts["swa"]
    if swa is None or not swa.n_averaged or s.rank != 0:
        return
    averaged = swa.averaged_model()
    recompute_norm_statistics(averaged, (torch.from_numpy(next(s.loader)[0]) for _ in range(16)), s.device)
    write_weights(s.run_dir / CHECKPOINT_SWA, averaged, state.epoch, n_averaged=swa.n_averaged)
    s.log(f"SWA: averaged {swa.n_averaged} snapshots into {CHECKPOINT_SWA}")


def _finish(s: _Session, state: TrainState, stopped_by: str, train_cases: list[PreparedCase],
            val_cases: list[PreparedCase]) -> TrainResult:
    """After the last epoch: case flags, the best checkpoint of a run without validation, the closing lines."""
    if s.rank == 0 and s.plan.train.flag_cases:
        write_case_flags(s.model, s.plan, train_cases, s.step.loss_fn, s.device, s.run_dir, s.log)
    if state.iterations:
        s.log(f"data: the model waited {s.loader.wait_seconds:.1f} s for batches "
              f"({100 * s.loader.wait_seconds / max(s.clock.session_seconds(), 1e-9):.1f}% of this session)")
    if s.rank == 0 and not val_cases:  # no validation: the last weights are the best we know
        write_weights(s.run_dir / CHECKPOINT_BEST, s.model, state.epoch)
    elapsed = s.clock.seconds() / 60.0
    if s.step.skipped:
        s.log(f"warning: {s.step.skipped} step(s) skipped: their loss or gradients were not finite (NaN or "
              "infinite); many mean the learning rate is too high for this data (--lr)")
    s.log(f"stopped by {stopped_by} after {state.epoch} epochs ({state.iterations} iterations), {elapsed:.1f} min; "
          + (f"best validation Dice {state.best_metric:.4f} at epoch {state.best_epoch}" if state.best_metric >= 0
             else "no validation cases"))
    return TrainResult(state.epoch, state.best_metric, state.best_epoch, elapsed, stopped_by, state.history,
                       state.iterations, s.model)
