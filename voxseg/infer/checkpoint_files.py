"""The checkpoint files of a run folder: their names, and which one a request for "best", "last" or "swa" reads.

A checkpoint is a ``torch.save`` dict whose ``model`` key holds the network's state dict (see
:mod:`voxseg.train.loop` for the other keys); ``plan.json`` beside it says how to build the network.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from voxseg.errors import InputError

__all__ = ["CHECKPOINT_LAST", "CHECKPOINT_BEST", "CHECKPOINT_SWA", "checkpoint_path"]

CHECKPOINT_LAST = "checkpoint_last.pt"
CHECKPOINT_BEST = "checkpoint_best.pt"
CHECKPOINT_SWA = "checkpoint_swa.pt"


def checkpoint_path(run_dir: str | Path, which: str = "best") -> Path:
    """The checkpoint file of a run folder for ``which`` (see ``voxseg.infer.load_model``).

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
