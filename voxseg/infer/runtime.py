"""Load a trained run folder's network (checkpoint names, format and lookup: :mod:`voxseg.infer.checkpoint_files`)."""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from voxseg.errors import InputError
from voxseg.nets.runtime import build_model
from voxseg.config import RunPlan
from voxseg.infer.checkpoint_files import checkpoint_path

__all__ = ["load_model"]


def load_model(run_dir: str | Path, which: str = "best") -> tuple[torch.nn.Module, RunPlan]:
    """Load a trained network from a run folder, in eval mode.

    Args:
        which: ``"best"`` (falls back to the last checkpoint when the run kept no best one, e.g. without a
            validation split), ``"last"`` or ``"swa"`` (no fallback: an SWA model is asked for by name).

    Raises:
        InputError: no plan.json, no such checkpoint (e.g. training has not saved one yet), or a checkpoint
            that cannot be read or does not fit the plan's network.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "plan.json").exists():
        raise InputError(run_dir, "not a voxseg run folder (no plan.json); train one with 'voxseg train'")
    plan = RunPlan.load(run_dir / "plan.json")
    model = build_model(plan)
    path = checkpoint_path(run_dir, which)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)["model"]
    except (RuntimeError, KeyError, TypeError, EOFError, OSError, pickle.UnpicklingError):
        raise InputError(path, "unreadable or truncated checkpoint (not a voxseg checkpoint, or cut short)") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # first line of torch's message names the first mismatching tensor
        detail = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise InputError(path, f"checkpoint does not fit the network in plan.json ({detail})") from None
    model.eval()
    return model, plan
