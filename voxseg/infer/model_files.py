"""A run folder's trained networks: the checkpoint file names, which file a request for "best", "last" or
"swa" reads, and loading the network onto a device.

A checkpoint is a ``torch.save`` dict whose ``model`` key holds the network's state dict (see
:mod:`voxseg.train.loop` for the other keys); ``plan.json`` beside it says how to build the network.
"""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch

from voxseg.config import RunPlan
from voxseg.errors import InputError
from voxseg.nets.build import build_model

__all__ = ["CHECKPOINT_LAST", "CHECKPOINT_BEST", "CHECKPOINT_SWA", "checkpoint_path", "load_model"]

CHECKPOINT_LAST = "checkpoint_last.pt"
CHECKPOINT_BEST = "checkpoint_best.pt"
CHECKPOINT_SWA = "checkpoint_swa.pt"


def checkpoint_path(run_dir: str | Path, which: str = "best") -> Path:
    """The checkpoint file of a run folder for ``which`` (see :func:`load_model`).

    Raises:
        InputError: the folder holds no such checkpoint (none at all while the first epoch still trains).
    """
    run_dir = Path(run_dir)
    path = run_dir / {"best": CHECKPOINT_BEST, "last": CHECKPOINT_LAST, "swa": CHECKPOINT_SWA}[which]
    if not path.exists() and which == "best" and (run_dir / CHECKPOINT_LAST).exists():
        # A run still before its first validation, or a deleted file: say which weights are used.
        warnings.warn(f"{run_dir}: no {CHECKPOINT_BEST} (no validation yet?): using {CHECKPOINT_LAST}", stacklevel=2)
        path = run_dir / CHECKPOINT_LAST
    if not path.exists():
        if not run_dir.is_dir():
            raise InputError(run_dir, "run folder not found")
        if not (run_dir / "plan.json").exists():
            raise InputError(run_dir, "not a voxseg run folder (no plan.json); train one with 'voxseg train'")
        hint = ("train with --swa-epochs to make one" if which == "swa" else
                "training has not saved a checkpoint yet (the first is written at the end of the first epoch)")
        raise InputError(path, f"no such checkpoint: {hint}")
    return path


def load_model(run_dir: str | Path, which: str = "best", device: torch.device | str = "cpu"
               ) -> tuple[torch.nn.Module, RunPlan]:
    """Load a trained network from a run folder, in eval mode, on ``device``.

    Args:
        which: ``"best"`` (falls back to the last checkpoint when the run kept no best one, e.g. without a
            validation split), ``"last"`` or ``"swa"`` (no fallback: an SWA model is asked for by name).
        device: where the weights are loaded (``map_location``) and the network lives
            (``voxseg.nets.resolve_device`` turns a ``--device`` name into one).

    Raises:
        InputError: no plan.json, no such checkpoint (e.g. training has not saved one yet), or a checkpoint
            that cannot be read or does not fit the plan's network.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "plan.json").exists():
        raise InputError(run_dir, "not a voxseg run folder (no plan.json); train one with 'voxseg train'")
    plan = RunPlan.load(run_dir / "plan.json")
    device = torch.device(device)
    model = build_model(plan).to(device)
    path = checkpoint_path(run_dir, which)
    try:
        state = torch.load(path, map_location=device, weights_only=False)["model"]
    except (RuntimeError, KeyError, TypeError, EOFError, OSError, pickle.UnpicklingError):
        raise InputError(path, "unreadable or truncated checkpoint (not a voxseg checkpoint, or cut short)") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # first line of torch's message names the first mismatching tensor
        detail = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise InputError(path, f"checkpoint does not fit the network in plan.json ({detail})") from None
    model.eval()
    return model, plan
