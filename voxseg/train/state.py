"""The training state and its checkpoints: every checkpoint of a run folder is written and read here.

Two formats, both ``torch.save`` dicts (names of the files: :mod:`voxseg.infer.model_files`):

- the training checkpoint (``checkpoint_last.pt``, written by :func:`write_checkpoint` after every epoch, read
  by :func:`read_checkpoint` to resume): ``model`` (state dict), ``optimizer`` (state dict), ``epoch`` (epochs
  completed), ``elapsed_seconds``, ``best_metric`` (best mean validation Dice, -1 before any),
  ``best_epoch``, ``iterations`` (the batch stream's position: batch ``i`` depends only on the seed and
  ``i``), ``rng`` (``{"torch": torch RNG state}``), ``history`` (the rows of ``log.csv``), ``stopped_main``
  (the main phase ended early: SWA follows), ``swa_done`` (SWA epochs completed), then the state dicts of
  the parts in use, by name: ``plateau``, ``early_stopping``, ``swa``, ``scaler``. Checkpoints of older
  versions may lack ``history``, ``iterations``, ``stopped_main``, ``swa_done`` and the parts; they read
  with the defaults of :class:`TrainState`.
- the weights checkpoint (``checkpoint_best.pt``, ``checkpoint_swa.pt``, written by :func:`write_weights`):
  ``model`` and ``epoch``, plus e.g. ``val_dice`` (best) or ``n_averaged`` (SWA).

:func:`read_weights` reads the ``model`` state dict of either format (inference, ``--init-from``).

Both are read without running code from the file (:func:`voxseg.infer.model_files.read_checkpoint_file`:
torch's weights-only unpickler), so every value written is a tensor or a plain Python value (int, float, str,
bool, None, and lists, tuples and dicts of them): numpy numbers are turned into Python ones as they are
written. Numpy numbers in checkpoints of older versions still read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voxseg.errors import InputError
from voxseg.infer.model_files import read_checkpoint_file, read_model_weights
from voxseg.io.files import write_atomic

__all__ = ["TrainState", "write_checkpoint", "read_checkpoint", "write_weights", "read_weights"]


@dataclass
class TrainState:
    """Where a run stands at the end of an epoch (what a training checkpoint holds besides the model,
    optimiser, RNG and the parts' own states).

    Attributes:
        epoch: epochs completed.
        elapsed_seconds: seconds trained, all sessions together.
        best_metric: best mean validation Dice so far; -1 before any validation.
        best_epoch: the epoch (1-based) of ``best_metric``; -1 before any.
        iterations: optimisation steps done (the batch stream's position).
        history: one dict per epoch, the rows of ``log.csv``.
        stopped_main: the main phase ended before its epochs (time budget or early stopping).
        swa_done: epochs of the SWA phase completed.
    """

    epoch: int = 0
    elapsed_seconds: float = 0.0
    best_metric: float = -1.0
    best_epoch: int = -1
    iterations: int = 0
    history: list[dict] = field(default_factory=list)
    stopped_main: bool = False
    swa_done: int = 0


def _plain(value: Any) -> Any:
    """``value`` with numpy numbers (and arrays) turned into Python ones (lists), through dicts, lists and tuples,
    so that the weights-only unpickler reads it back; tensors and anything unchanged are kept as they are (a
    state dict keeps its type and metadata)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        items = {k: _plain(v) for k, v in value.items()}
        return value if all(items[k] is v for k, v in value.items()) else type(value)(items)
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):  # not a named tuple (e.g. torch.Size)
        items = [_plain(v) for v in value]
        return value if all(a is b for a, b in zip(items, value)) else type(value)(items)
    return value


def _save(path: Path, payload: dict) -> None:
    payload = _plain(payload)
    write_atomic(Path(path), lambda f: torch.save(payload, f))


def write_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainState,
                     parts: dict[str, Any]) -> None:
    """Write the training checkpoint (atomically: a reader never sees half a file).

    Args:
        model / optimizer: their state dicts are saved.
        state: the run's state; torch's RNG state is taken now.
        parts: ``{name: object with state_dict() or None}`` (``plateau``, ``early_stopping``, ``swa``,
            ``scaler``); the ones that are not None are saved under their names, in this order.
    """
    _save(path, {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": state.epoch,
        "elapsed_seconds": state.elapsed_seconds, "best_metric": state.best_metric, "best_epoch": state.best_epoch,
        "iterations": state.iterations, "rng": {"torch": torch.get_rng_state()}, "history": state.history,
        "stopped_main": state.stopped_main, "swa_done": state.swa_done,
        **{name: part.state_dict() for name, part in parts.items() if part is not None}})


def read_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    parts: dict[str, Any], iterations_per_epoch: int) -> TrainState:
    """Restore a training checkpoint into ``model``, ``optimizer``, torch's RNG and ``parts``; return the state.

    Args:
        parts: ``{name: object with load_state_dict() or None}``; a part the checkpoint has no state for keeps
            its own.
        iterations_per_epoch: the run's; a checkpoint without ``iterations`` (older versions) was at
            ``epoch * iterations_per_epoch``.

    Raises:
        InputError: naming ``path``: unreadable, truncated or corrupt, holding objects other than tensors and
            plain values (refused before anything in it runs), not a training checkpoint, or not for this network.
    """
    path = Path(path)
    ckpt = read_checkpoint_file(path)
    missing = [key for key in ("model", "optimizer", "epoch", "elapsed_seconds", "best_metric", "best_epoch", "rng")
               if key not in ckpt]
    if missing:
        raise InputError(path, f"not a voxseg training checkpoint (no {', '.join(missing)}); --resume reads the "
                               f"checkpoint_last.pt that training writes")
    _restore(path, "network", model, ckpt["model"])
    if optimizer is not None:
        _restore(path, "optimiser", optimizer, ckpt["optimizer"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    for name, part in parts.items():
        if part is not None and ckpt.get(name) is not None:
            _restore(path, name.replace("_", " "), part, ckpt[name])
    return TrainState(epoch=int(ckpt["epoch"]), elapsed_seconds=float(ckpt["elapsed_seconds"]),
                      best_metric=float(ckpt["best_metric"]), best_epoch=int(ckpt["best_epoch"]),
                      iterations=int(ckpt.get("iterations", ckpt["epoch"] * iterations_per_epoch)),
                      history=_plain(ckpt.get("history", [])), stopped_main=bool(ckpt.get("stopped_main", False)),
                      swa_done=int(ckpt.get("swa_done", 0)))


def _restore(path: Path, what: str, target: Any, state: Any) -> None:
    """``target.load_state_dict(state)``; a state that does not fit is said in one line naming the checkpoint."""
    try:
        target.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:  # torch's first detail line names the mismatch
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        raise InputError(path, f"checkpoint does not fit the {what} in plan.json ({lines[min(1, len(lines) - 1)]})") \
            from None


def write_weights(path: str | Path, model: torch.nn.Module, epoch: int, **extra: Any) -> None:
    """Write a weights checkpoint ``{"model", "epoch", **extra}`` atomically (e.g. ``val_dice=`` for the best
    one, ``n_averaged=`` for the SWA one)."""
    _save(path, {"model": model.state_dict(), "epoch": epoch, **extra})


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The network's state dict from a checkpoint of either format, on the CPU, read without running code from
    the file (:func:`voxseg.infer.model_files.read_model_weights`).

    Raises:
        InputError: the file cannot be read as a checkpoint (not a voxseg checkpoint, cut short, or holding
            objects other than tensors and plain values).
    """
    return read_model_weights(path, map_location="cpu")
