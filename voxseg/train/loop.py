"""The training loop: sample patches, step, validate, checkpoint. Every knob lives in the plan.

Run folder contents written here: ``checkpoint_last.pt``, ``checkpoint_best.pt``, ``log.csv``.
A checkpoint is a dict with ``model`` (state dict), ``optimizer``, ``epoch`` (epochs completed),
``elapsed_seconds``, ``best_metric``, ``rng`` (numpy and torch states) so ``resume`` continues the run.
"""
from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from voxseg.data.labels import LabelScheme, labels_to_regions
from voxseg.data.sampling import PatchSampler, random_flip
from voxseg.infer.runtime import (CHECKPOINT_BEST, CHECKPOINT_LAST, autocast_context, build_model,
                                  predict_volume, probabilities_to_labels, resolve_amp)
from voxseg.losses import DeepSupervisionLoss, build_loss
from voxseg.metrics import overlap_metrics
from voxseg.plan.plan import RunPlan

__all__ = ["PreparedCase", "TrainResult", "train_model"]



@dataclass
class PreparedCase:
    """A preprocessed case held in memory.

    Attributes:
        case_id: identifier.
        image: ``(C, Z, Y, X)`` float32, normalised.
        label: ``(Z, Y, X)`` uint8 consecutive classes (0 = background), or None.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None


@dataclass
class TrainResult:
    epochs_done: int
    best_metric: float
    best_epoch: int
    elapsed_minutes: float
    stopped_by: str
    history: list[dict] = field(default_factory=list)


def _targets(labels: np.ndarray, plan: RunPlan) -> torch.Tensor:
    """Batch ``(B, *spatial)`` consecutive labels -> loss targets (indices, or region masks)."""
    if plan.label_scheme.startswith("brats"):
        scheme = LabelScheme(plan.label_scheme)
        values = np.asarray(plan.label_values)[labels]
        regions = np.stack([labels_to_regions(v, scheme) for v in values])
        return torch.from_numpy(regions.astype(np.float32))
    return torch.from_numpy(labels.astype(np.int64))[:, None]


def _validation_dice(model, plan, cases: list[PreparedCase], device) -> dict[str, float]:
    """Mean Dice per foreground class over the validation cases (preprocessed space)."""
    model.eval()
    per_class: dict[str, list[float]] = {}
    for case in cases:
        pred = probabilities_to_labels(predict_volume(model, plan, case.image, device), plan)
        for k in range(1, len(plan.label_values)):
            name = plan.label_names.get(str(plan.label_values[k]), f"label_{plan.label_values[k]}")
            dice = overlap_metrics(pred == k, case.label == k, (1.0,) * pred.ndim)["dice"]  # same empty policy
            per_class.setdefault(name, []).append(dice)
    model.train()
    return {name: float(np.mean(v)) for name, v in per_class.items()}


def _rng_state(rng: np.random.Generator) -> dict:
    return {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()}


def _save_checkpoint(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


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


def _poly_lr(base: float, fraction_done: float) -> float:
    return base * (1.0 - min(fraction_done, 0.999)) ** 0.9


def train_model(plan: RunPlan, train_cases: list[PreparedCase], val_cases: list[PreparedCase], run_dir: str | Path,
                resume: bool = False, progress: bool = True, device: str | None = None,
                log: Callable[[str], None] = print) -> TrainResult:
    """Train the plan's network on prepared cases, validating on held-out cases each epoch.

    The poly learning-rate schedule runs on the fraction of the run done, which is the larger of
    ``epoch / epochs`` and ``elapsed / time_budget``: with a budget the rate still decays to ~0 by
    the end, so a budget-limited run converges instead of stopping at a high rate.

    Args:
        plan: the run plan (saved by the caller as ``run_dir/plan.json``).
        train_cases / val_cases: preprocessed cases (labels consecutive).
        run_dir: folder for checkpoints and ``log.csv``.
        resume: continue from ``checkpoint_last.pt`` with optimiser, schedule and RNG states.
        progress: show a progress bar (loss, Dice, ETA).
        device: ``"cpu"``, ``"cuda"``; default: CUDA when available.
    """
    run_dir = Path(run_dir)
    cfg = plan.train
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build_model(plan).to(dev)
    log(f"mixed precision: {cfg.amp} -> {resolve_amp(cfg.amp, dev)} on {dev.type} with {torch.get_num_threads()} "
        f"threads; {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    mode = "sigmoid" if plan.label_scheme.startswith("brats") else "softmax"
    loss_fn = build_loss(cfg.loss, mode=mode, **cfg.loss_kwargs)
    deep = bool(getattr(model, "deep_supervision", False))
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.99, nesterov=True,
                                    weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose sgd or adam")

    start_epoch, elapsed_before, best, best_epoch = 0, 0.0, -1.0, -1
    history: list[dict] = []
    if resume:
        state = torch.load(run_dir / CHECKPOINT_LAST, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, elapsed_before = state["epoch"], state["elapsed_seconds"]
        best, best_epoch = state["best_metric"], state["best_epoch"]
        rng.bit_generator.state = state["rng"]["numpy"]
        torch.set_rng_state(state["rng"]["torch"])
        history = state.get("history", [])
        log(f"resumed from epoch {start_epoch} ({elapsed_before / 60:.1f} min trained)")

    patch = tuple(cfg.patch_size)
    samplers = [PatchSampler(c.image, c.label, patch, foreground_fraction=cfg.foreground_fraction, rng=rng)
                for c in train_cases]
    budget_s = cfg.time_budget_minutes * 60.0 if cfg.time_budget_minutes else math.inf
    n_fg = max(1, round(cfg.batch_size * cfg.foreground_fraction)) if cfg.foreground_fraction > 0 else 0
    total_iters = cfg.epochs * cfg.iterations_per_epoch
    # With a time budget the bar counts seconds of the budget (its ETA is then the true end time);
    # otherwise it counts iterations.
    by_time = budget_s < total_iters * 60.0  # any budget shorter than a minute per iteration binds first
    bar = tqdm(total=int(budget_s) if by_time else total_iters,
               initial=int(elapsed_before) if by_time else start_epoch * cfg.iterations_per_epoch,
               disable=not progress, unit="s" if by_time else "it", dynamic_ncols=True, desc="train",
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}{postfix}]")
    iterations_done = start_epoch * cfg.iterations_per_epoch
    t0 = time.perf_counter() - elapsed_before
    stopped_by = "epochs"
    epoch = start_epoch
    model.train()
    for epoch in range(start_epoch, cfg.epochs):
        losses = []
        for it in range(cfg.iterations_per_epoch):
            done = max(epoch / cfg.epochs + it / total_iters, (time.perf_counter() - t0) / budget_s)
            lr = _poly_lr(cfg.lr, done)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, labels = [], []
            for b in range(cfg.batch_size):
                sampler = samplers[int(rng.integers(len(samplers)))]
                img, lbl = sampler.sample(force_foreground=b < n_fg)
                if cfg.flips:
                    axes = (1, 2) if plan.network.spatial_dims == 2 else (0, 1, 2)
                    img, lbl = random_flip(img, lbl, rng, axes=axes)
                images.append(img)
                labels.append(lbl)
            x = torch.from_numpy(np.stack(images))
            y = _targets(np.stack(labels), plan)
            if plan.network.spatial_dims == 2:
                x, y = x[:, :, 0], y[:, :, 0]
            x, y = x.to(dev), y.to(dev)
            optimizer.zero_grad(set_to_none=True)
            with autocast_context(cfg.amp, dev):
                out = model(x)
            if deep and isinstance(out, (list, tuple)):
                loss = DeepSupervisionLoss(loss_fn, len(out))([o.float() for o in out], y)
            else:
                loss = loss_fn(out.float(), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
            optimizer.step()
            losses.append(float(loss.detach()))
            iterations_done += 1
            bar.update(int(time.perf_counter() - t0) - bar.n if by_time else 1)
            bar.set_postfix_str(f"it {iterations_done}, loss {np.mean(losses[-20:]):.3f}, best val Dice "
                                f"{best:.3f}, lr {lr:.2g}" if best >= 0 else
                                f"it {iterations_done}, loss {np.mean(losses[-20:]):.3f}, lr {lr:.2g}")
            if time.perf_counter() - t0 >= budget_s:
                stopped_by = "time budget"
                break
        row = {"epoch": epoch + 1, "iterations": (epoch + 1) * cfg.iterations_per_epoch, "lr": lr,
               "train_loss": float(np.mean(losses)), "minutes": (time.perf_counter() - t0) / 60.0}
        is_last = stopped_by == "time budget" or epoch + 1 == cfg.epochs
        if val_cases and ((epoch + 1) % cfg.val_every == 0 or is_last):
            dice = _validation_dice(model, plan, val_cases, dev)
            mean_dice = float(np.mean(list(dice.values()))) if dice else 0.0
            row.update({f"val_dice_{k}": v for k, v in dice.items()})
            row["val_dice_mean"] = mean_dice
            if mean_dice > best:
                best, best_epoch = mean_dice, epoch + 1
                _save_checkpoint(run_dir / CHECKPOINT_BEST, {"model": model.state_dict(), "epoch": epoch + 1,
                                                             "val_dice": dice})
        history.append(row)
        _append_log(run_dir / "log.csv", row)
        _save_checkpoint(run_dir / CHECKPOINT_LAST, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
            "elapsed_seconds": time.perf_counter() - t0, "best_metric": best, "best_epoch": best_epoch,
            "rng": _rng_state(rng), "history": history})
        if stopped_by == "time budget":
            break
    bar.close()
    if not val_cases:  # no validation: the last weights are the best we know
        _save_checkpoint(run_dir / CHECKPOINT_BEST, {"model": model.state_dict(), "epoch": epoch + 1})
    elapsed = (time.perf_counter() - t0) / 60.0
    log(f"stopped by {stopped_by} after {epoch + 1} epochs, {elapsed:.1f} min; best validation Dice "
        f"{best:.4f} at epoch {best_epoch}")
    return TrainResult(epoch + 1, best, best_epoch, elapsed, stopped_by, history)
