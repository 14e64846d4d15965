"""The training loop: sample patches, step, validate, checkpoint. Every knob lives in the plan.

Run folder contents written here: ``checkpoint_last.pt``, ``checkpoint_best.pt``, ``log.csv``.
A checkpoint is a dict with ``model`` (state dict), ``optimizer``, ``epoch`` (epochs completed),
``elapsed_seconds``, ``best_metric``, ``iterations`` (the batch stream's position: batch ``i`` depends
only on the seed and ``i``) and the torch RNG state, so ``resume`` continues the run exactly.
"""
from __future__ import annotations

import csv
import functools
import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm


from voxseg.data.augment import build_augmentation
from voxseg.data.cache import PreparedCase
from voxseg.data.loader import PatchLoader
from voxseg.errors import InputError
from voxseg.losses import DeepSupervisionLoss, build_loss
from voxseg.nets import freeze_encoder, unfreeze
from voxseg.nets import autocast_context, build_model, resolve_amp
from voxseg.infer.sliding_window import predict_volume, probabilities_to_labels
from voxseg.config import RunPlan
from voxseg.io.files import save_json_atomic, write_atomic
from voxseg.infer.model_files import CHECKPOINT_BEST, CHECKPOINT_LAST, CHECKPOINT_SWA, checkpoint_path
from voxseg.train.case_losses import flag_high_loss_cases, training_case_losses
from voxseg.train.distributed import barrier, init_distributed
from voxseg.train.early_stopping import EarlyStopping
from voxseg.train.optim import build_optimizer
from voxseg.train.schedules import PlateauScheduler, lr_factor
from voxseg.train.swa import SWACollector, recompute_norm_statistics, swa_lr

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


@functools.lru_cache(maxsize=8)
def _region_table(label_values: tuple[int, ...], regions: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """``(K, R)`` float32: 1 where consecutive class ``k``'s label value lies in region ``r``."""
    return np.array([[v in region for region in regions] for v in label_values], dtype=np.float32)


def _targets(labels: np.ndarray, plan: RunPlan) -> torch.Tensor:
    """Batch ``(B, *spatial)`` consecutive labels -> loss targets: ``(B, 1, ...)`` indices, or ``(B, R, ...)``
    region masks (one table lookup per voxel; the labels were checked against the scheme when preprocessed)."""
    scheme = plan.scheme
    if scheme.is_region_based:
        table = _region_table(tuple(plan.label_values), tuple(scheme.regions.values()))
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(table[labels], -1, 1)))
    return torch.from_numpy(labels.astype(np.int64))[:, None]


def _validation_dice(model, plan, cases: list[PreparedCase], device) -> dict[str, float]:
    """Mean Dice per foreground class, or per region for region schemes (what the network predicts, e.g.
    BraTS WT/TC/ET, as nnU-Net selects region models), over the validation cases (preprocessed space)."""
    model.eval()
    scheme = plan.scheme
    index = {v: k for k, v in enumerate(plan.label_values)}  # original value -> consecutive class
    if scheme.is_region_based:
        structures = [(name, [index[v] for v in values if v in index]) for name, values in scheme.regions.items()]
    else:
        structures = [(plan.label_names.get(str(v), f"label_{v}"), [k]) for k, v in enumerate(plan.label_values) if k]
    per_structure: dict[str, list[float]] = {}
    for case in cases:
        pred = probabilities_to_labels(predict_volume(model, plan, case.image, device), plan)
        for name, classes in structures:
            per_structure.setdefault(name, []).append(_dice(np.isin(pred, classes), np.isin(case.label, classes)))
    model.train()
    return {name: float(np.mean(v)) for name, v in per_structure.items()}


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean masks, with the evaluation's empty-mask policy (``voxseg.metrics.policy``: both empty
    1, one empty 0); ``voxseg.metrics.overlap_metrics`` is its test oracle."""
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(ref))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(pred & ref)) / total


def _save_checkpoint(path: Path, payload: dict) -> None:
    write_atomic(path, lambda f: torch.save(payload, f))


_DIVERGED_AFTER = 10  # this many non-finite losses in a row end the run: it will not recover by itself
_FEW_ITERATIONS = 200  # below this a budget-limited run gets a warning with its projected iteration count
_PROJECT_AFTER = 4  # iterations of a session timed for the projection (the first is excluded)


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


def _init_from(model: torch.nn.Module, run_dir: str, log: Callable[[str], None]) -> None:
    """Transfer learning: copy weights from another run where names and shapes match (a new head stays random)."""
    path = checkpoint_path(run_dir, "best")
    source = torch.load(path, map_location="cpu", weights_only=False)["model"]
    own = model.state_dict()
    matched = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    own.update(matched)
    model.load_state_dict(own)
    log(f"initialised {len(matched)}/{len(own)} tensors from {path} (others, e.g. a re-sized head, stay random)")


def _loader(plan: RunPlan, cases: list[PreparedCase], seed: int, start_batch: int) -> PatchLoader:
    """The batch stream of a run: batch ``i`` depends only on ``(seed, i)``, so resume continues it."""
    cfg = plan.train
    mode = cfg.mode if plan.network.spatial_dims == 2 else "3d"
    if plan.network.spatial_dims == 2 and mode == "3d":
        mode = "2d"
    patch = cfg.patch_size[1:] if mode != "3d" else cfg.patch_size
    loader = PatchLoader([(c.image, c.label) for c in cases], patch, batch_size=cfg.batch_size,
                         foreground_fraction=cfg.foreground_fraction, augment=build_augmentation(plan.augment),
                         num_workers=cfg.loader_workers, seed=seed, mode=mode, slices=cfg.slices,
                         slice_selection=cfg.slice_selection, overhang=cfg.patch_overhang,
                         channels=plan.channel_indices if cfg.channels else None)
    loader.load_state_dict({"next_batch": start_batch})
    return loader


def _flag_cases(model, plan: RunPlan, cases: list[PreparedCase], loss_fn, dev, run_dir: Path, log) -> None:
    """Write ``case_losses.csv`` and ``flagged_cases.json`` (Henry et al.'s (2021) filtering; see ``case_losses``)."""
    two_d = plan.network.spatial_dims == 2

    def prepare(x: torch.Tensor) -> torch.Tensor:
        x = x[:, plan.channel_indices] if plan.train.channels else x
        return (x[:, :, 0] if two_d else x).to(dev)

    def loss_of(logits, label) -> float:
        target = _targets(label[:, 0] if two_d else label, plan).to(dev)
        out = logits[0] if isinstance(logits, (list, tuple)) else logits
        return float(loss_fn(out.float(), target))

    if plan.train.mode == "2.5d":
        log("case flagging is not available for 2.5-D training; skipped")
        return
    losses = training_case_losses(model, cases, loss_of, tuple(plan.train.patch_size), seed=plan.train.seed,
                                  prepare=prepare)
    flagged = flag_high_loss_cases(losses)
    lines = ["case_id,loss,flagged"] + [f"{c},{v:.6f},{int(c in flagged)}"
                                        for c, v in sorted(losses.items(), key=lambda kv: -kv[1])]
    (run_dir / "case_losses.csv").write_text("\n".join(lines) + "\n")
    save_json_atomic({"flagged": flagged, "rule": "loss > median + 3 * 1.4826 * MAD",
                      "losses": {c: losses[c] for c in flagged}}, run_dir / "flagged_cases.json")
    log(f"flagged {len(flagged)} case(s) with high final training loss (flagged_cases.json): "
        f"{', '.join(flagged) or 'none'}; retrain without them with --exclude-cases {run_dir / 'flagged_cases.json'}")


def train_model(plan: RunPlan, train_cases: list[PreparedCase], val_cases: list[PreparedCase], run_dir: str | Path,
                resume: bool = False, progress: bool = True, device: str | None = None,
                log: Callable[[str], None] = print) -> TrainResult:
    """Train the plan's network on prepared cases, validating on held-out cases each epoch.

    The poly learning-rate schedule runs on the fraction of the run done, which is the larger of
    ``epoch / epochs`` and ``elapsed / time_budget``: with a budget the rate still decays to ~0 by
    the end, so a budget-limited run converges instead of stopping at a high rate.

    Resume is exact for epoch-limited runs: weights, optimiser, batch stream and torch RNG are restored
    from the end of the last finished epoch (a time budget makes the schedule depend on the clock).

    Under ``torchrun --nproc_per_node N`` each process trains on its own patches (seed + rank),
    gradients are averaged by DistributedDataParallel (gloo on CPU, NCCL on GPUs) and rank 0 alone
    validates and writes checkpoints and logs.

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
    rank, world = init_distributed(device)
    main_process = rank == 0
    log = log if main_process else (lambda message: None)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
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
    loss_fn = build_loss(cfg.loss, mode=plan.activation,
                         **cfg.loss_kwargs)
    deep = bool(getattr(model, "deep_supervision", False))
    optimizer = build_optimizer(cfg.optimizer, model, cfg.lr, cfg.weight_decay, **cfg.optimizer_kwargs)
    plateau = PlateauScheduler(cfg.lr, factor=cfg.plateau_factor, patience=cfg.plateau_patience) \
        if cfg.plateau_patience else None
    early = EarlyStopping(patience=cfg.early_stopping_patience, min_delta=cfg.early_stopping_min_delta) \
        if cfg.early_stopping_patience else None
    swa = SWACollector(model, every_k_epochs=cfg.swa_every_k_epochs) if cfg.swa_epochs else None
    # float16 on CUDA needs loss scaling against gradient underflow; a disabled scaler is a no-op.
    scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda" and resolve_amp(cfg.amp, dev) == "fp16")

    start_epoch, elapsed_before, best, best_epoch, iterations_done = 0, 0.0, -1.0, -1, 0
    swa_done = 0
    not_finite = 0  # losses in a row that were NaN or infinite (their steps are skipped)
    skipped_steps = 0  # steps skipped for non-finite gradients, this session
    stopped_main = False  # the main phase ended early (time budget, early stopping): SWA may still follow
    history: list[dict] = []
    if resume:
        state = torch.load(run_dir / CHECKPOINT_LAST, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, elapsed_before = state["epoch"], state["elapsed_seconds"]
        best, best_epoch = state["best_metric"], state["best_epoch"]
        torch.set_rng_state(state["rng"]["torch"])
        history = state.get("history", [])
        iterations_done = state.get("iterations", start_epoch * cfg.iterations_per_epoch)
        for name, part in (("plateau", plateau), ("early_stopping", early), ("swa", swa), ("scaler", scaler)):
            if part is not None and state.get(name) is not None:
                part.load_state_dict(state[name])
        stopped_main, swa_done = state.get("stopped_main", False), state.get("swa_done", 0)
        log(f"resumed from epoch {start_epoch} ({elapsed_before / 60:.1f} min trained)")
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # Unused in a step: frozen stages, and the coarsest deep-supervision head (weight 0, as in nnU-Net).
        net = DistributedDataParallel(model, find_unused_parameters=bool(cfg.freeze_stages) or deep)

    loader = _loader(plan, train_cases, seed=cfg.seed + 1000 * rank, start_batch=iterations_done)
    budget_s = cfg.time_budget_minutes * 60.0 if cfg.time_budget_minutes else math.inf
    total_iters = cfg.epochs * cfg.iterations_per_epoch
    # With a time budget the bar counts seconds of the budget (its ETA is then the true end time);
    # otherwise it counts iterations.
    by_time = budget_s < total_iters * 60.0  # any budget shorter than a minute per iteration binds first
    bar = tqdm(total=int(budget_s) if by_time else total_iters,
               initial=int(elapsed_before) if by_time else start_epoch * cfg.iterations_per_epoch,
               disable=not (progress and main_process), unit="s" if by_time else "it", dynamic_ncols=True,
               desc="train", bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}{postfix}]")
    t0 = time.perf_counter() - elapsed_before
    session_iterations, t_first = 0, t0
    stopped_by = "epochs"
    epochs_done = start_epoch
    net.train()
    for epoch in itertools.count(start_epoch):
        in_swa = epoch >= cfg.epochs or stopped_main
        if in_swa and swa_done >= cfg.swa_epochs:
            break
        if cfg.freeze_stages and cfg.unfreeze_after_epochs is not None and epoch == cfg.unfreeze_after_epochs:
            unfreeze(model)
            log(f"epoch {epoch}: unfroze the encoder")
        losses = []
        for it in range(cfg.iterations_per_epoch):
            if in_swa:
                t_swa = (swa_done + it / cfg.iterations_per_epoch) / cfg.swa_epochs
                lr = swa_lr(t_swa, cfg.lr, cycles=cfg.swa_cycles, restart_fraction=cfg.swa_lr_fraction)
            else:
                done = max(epoch / cfg.epochs + it / total_iters, (time.perf_counter() - t0) / budget_s)
                lr = cfg.lr * lr_factor(cfg.schedule, done, **cfg.schedule_kwargs)
                if plateau is not None:
                    lr *= plateau.lr / cfg.lr
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = next(loader)
            x, y = torch.from_numpy(x).to(dev), _targets(y, plan).to(dev)
            optimizer.zero_grad(set_to_none=True)
            with autocast_context(cfg.amp, dev):
                out = net(x)
            if deep and isinstance(out, (list, tuple)):
                loss = DeepSupervisionLoss(loss_fn, len(out))([o.float() for o in out], y)
            else:
                loss = loss_fn(out.float(), y)
            loss_value = float(loss.detach())  # one device sync per step, used twice
            if _on_any_rank(not math.isfinite(loss_value), world, dev):  # ranks stop together, or none waits
                not_finite += 1
                if not_finite >= _DIVERGED_AFTER:
                    bar.close()
                    loader.close()  # its worker processes, when there are any
                    raise InputError(Path(run_dir), f"training diverged: the loss was not a number for {not_finite} "
                                     f"iterations in a row (from iteration {iterations_done - not_finite + 2}, "
                                     f"learning rate {lr:.3g}); lower --lr (and keep --grad-clip on). The "
                                     "checkpoints saved before stay in the run folder")
            else:
                not_finite = 0
            if math.isfinite(loss_value):
                losses.append(loss_value)
            scaler.scale(loss).backward()  # every rank, always: DDP averages gradients across ranks here
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
            # A step with non-finite gradients would make every weight NaN for good: skip it (fp16's scaler
            # skips such steps itself), so one bad batch costs one step, not the run.
            if scaler.is_enabled() or math.isfinite(float(grad_norm)):
                scaler.step(optimizer)
            else:
                skipped_steps += 1
            scaler.update()
            iterations_done += 1
            session_iterations += 1
            if session_iterations == 1:
                t_first = time.perf_counter()  # the first step warms up (allocation, kernel choice): not timed
            elif session_iterations == _PROJECT_AFTER and not in_swa and math.isfinite(budget_s):
                seconds_per_it = (time.perf_counter() - t_first) / (_PROJECT_AFTER - 1)
                projected = iterations_done + (budget_s - (time.perf_counter() - t0)) / seconds_per_it
                if projected < _FEW_ITERATIONS:
                    log(f"warning: at {seconds_per_it:.2g} s per iteration the {cfg.time_budget_minutes:.3g}-minute "
                        f"budget allows about {max(int(projected), iterations_done)} iterations; a U-Net rarely "
                        f"learns in fewer than {_FEW_ITERATIONS} (the benchmarks here ran 2,200-3,700). Give it "
                        f"more time, a smaller patch (--patch, or --min-iterations N to plan one) or network "
                        "(--net-args base_width=...)")
            # A budgeted bar stops at its total: the last step may end a little past the budget.
            bar.update(min(int(time.perf_counter() - t0), bar.total) - bar.n if by_time else 1)
            recent = float(np.mean(losses[-20:])) if losses else math.nan
            bar.set_postfix_str(f"it {iterations_done}, loss {recent:.3f}, best val Dice {best:.3f}, lr {lr:.2g}"
                                if best >= 0 else f"it {iterations_done}, loss {recent:.3f}, lr {lr:.2g}")
            if not in_swa and _budget_spent(time.perf_counter() - t0 >= budget_s, world, dev):
                stopped_by = "time budget"
                break
        epochs_done = epoch + 1
        row = {"epoch": epochs_done, "iterations": iterations_done, "lr": lr,
               "train_loss": float(np.mean(losses)) if losses else math.nan, "minutes": (time.perf_counter() - t0) / 60.0}
        is_last = stopped_by == "time budget" or epoch + 1 == cfg.epochs
        if in_swa:
            swa_done += 1
            swa.epoch_end(swa_done, last=swa_done >= cfg.swa_epochs)
        if main_process:
            if val_cases and not in_swa and ((epoch + 1) % cfg.val_every == 0 or is_last):
                dice = _validation_dice(model, plan, val_cases, dev)
                mean_dice = float(np.mean(list(dice.values()))) if dice else 0.0
                row.update({f"val_dice_{k}": v for k, v in dice.items()})
                row["val_dice_mean"] = mean_dice
                if mean_dice > best:
                    best, best_epoch = mean_dice, epoch + 1
                    _save_checkpoint(run_dir / CHECKPOINT_BEST, {"model": model.state_dict(), "epoch": epoch + 1,
                                                                 "val_dice": dice})
                if plateau is not None:
                    plateau.step(mean_dice)
                if early is not None and early.update(mean_dice):
                    stopped_by = "early stopping"
            history.append(row)
            _append_log(run_dir / "log.csv", row)
            _save_checkpoint(run_dir / CHECKPOINT_LAST, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                "elapsed_seconds": time.perf_counter() - t0, "best_metric": best, "best_epoch": best_epoch,
                "iterations": iterations_done, "rng": {"torch": torch.get_rng_state()},
                "history": history, "stopped_main": stopped_main or stopped_by != "epochs", "swa_done": swa_done,
                **{name: part.state_dict() for name, part in (("plateau", plateau), ("early_stopping", early),
                                                               ("swa", swa), ("scaler", scaler)) if part is not None}})
        stopped_by = _agree(stopped_by, world)
        barrier()
        if stopped_by != "epochs" and not in_swa:
            if not cfg.swa_epochs:
                break
            stopped_main = True  # go on with the SWA phase
    if swa is not None and swa.n_averaged and main_process:
        averaged = swa.averaged_model()
        recompute_norm_statistics(averaged, (torch.from_numpy(next(loader)[0]) for _ in range(16)), dev)
        _save_checkpoint(run_dir / CHECKPOINT_SWA, {"model": averaged.state_dict(), "epoch": epochs_done,
                                                    "n_averaged": swa.n_averaged})
        log(f"SWA: averaged {swa.n_averaged} snapshots into {CHECKPOINT_SWA}")
    bar.close()
    loader.close()
    if main_process and cfg.flag_cases:
        _flag_cases(model, plan, train_cases, loss_fn, dev, run_dir, log)
    if iterations_done:
        log(f"data: the model waited {loader.wait_seconds:.1f} s for batches "
            f"({100 * loader.wait_seconds / max(time.perf_counter() - t0 - elapsed_before, 1e-9):.1f}% of this session)")
    if main_process and not val_cases:  # no validation: the last weights are the best we know
        _save_checkpoint(run_dir / CHECKPOINT_BEST, {"model": model.state_dict(), "epoch": epochs_done})
    elapsed = (time.perf_counter() - t0) / 60.0
    if skipped_steps:
        log(f"warning: {skipped_steps} step(s) skipped: their loss or gradients were not finite (NaN or infinite); "
            "many mean the learning rate is too high for this data (--lr)")
    log(f"stopped by {stopped_by} after {epochs_done} epochs ({iterations_done} iterations), {elapsed:.1f} min; "
        + (f"best validation Dice {best:.4f} at epoch {best_epoch}" if best >= 0 else "no validation cases"))
    return TrainResult(epochs_done, best, best_epoch, elapsed, stopped_by, history, iterations_done, model)


def _agree(stopped_by: str, world: int) -> str:
    """Rank 0 decides early stopping (it alone validates); every rank follows."""
    if world == 1:
        return stopped_by
    box = [stopped_by]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _on_any_rank(local: bool, world: int, device: torch.device) -> bool:
    """True on every rank when ``local`` is true on any (one all-reduce under DDP)."""
    if world == 1:
        return local
    flag = torch.tensor([1.0 if local else 0.0], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())


def _budget_spent(local: bool, world: int, device: torch.device) -> bool:
    """Every rank stops at the same iteration: rank 0's clock decides."""
    if world == 1:
        return local
    flag = torch.tensor([1.0 if local else 0.0], device=device)
    torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())
