"""A run folder's trained networks: the checkpoint file names, which file a request for "best", "last" or
"swa" reads, the one reader of checkpoint files, and loading the network onto a device.

A checkpoint is a ``torch.save`` dict whose ``model`` key holds the network's state dict (see
:mod:`voxseg.train.state` for the other keys); ``plan.json`` beside it says how to build the network.

Every checkpoint is read by :func:`read_checkpoint_file`, with torch's weights-only unpickler: a file holds
tensors and plain Python values (numbers, strings, lists, dicts, tuples), and anything else in it (an object
whose unpickling would call a function, e.g. run a shell command) is refused before it runs. A model file
from someone else is therefore safe to load; ``weights_only=False`` appears nowhere in voxseg.
"""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voxseg.config import RunPlan
from voxseg.errors import InputError
from voxseg.nets.build import build_model

try:  # numpy >= 2
    from numpy._core.multiarray import scalar as _np_scalar
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import scalar as _np_scalar

__all__ = ["CHECKPOINT_LAST", "CHECKPOINT_BEST", "CHECKPOINT_SWA", "checkpoint_path", "load_model",
           "read_checkpoint_file", "read_model_weights"]

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


# numpy's scalar reconstruction (np.float64(0.5) pickles as ``scalar(dtype("float64"), raw bytes)``, the dtype
# restored by its own ``__setstate__``): older voxseg versions could leave numpy numbers in a checkpoint's
# history rows. Nothing here calls anything but numpy's constructors for numbers. numpy 1.x names the scalar
# function ``numpy.core.multiarray.scalar``, numpy 2 ``numpy._core.multiarray.scalar``: both names are allowed.
_NUMPY_NUMBERS = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
                  np.float16, np.float32, np.float64)
_NUMPY_SCALAR_GLOBALS = [np.dtype, *sorted({type(np.dtype(t)) for t in _NUMPY_NUMBERS} - {np.dtype}, key=str),
                         (_np_scalar, "numpy._core.multiarray.scalar"), (_np_scalar, "numpy.core.multiarray.scalar")]

_UNREADABLE = "unreadable or truncated checkpoint (corrupt, cut short, or not a voxseg checkpoint)"


def read_checkpoint_file(path: str | Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint file (any ``torch.save`` dict) without running code from it.

    ``torch.load`` with ``weights_only=True``: tensors and plain Python values only, plus numpy scalars (from
    older checkpoints). A pickle that would build any other object is refused before anything in it runs.

    Args:
        path: the ``.pt`` file.
        map_location: where the tensors are loaded (e.g. ``"cpu"``, a ``torch.device``).

    Raises:
        InputError: naming ``path``: the file cannot be read, is truncated or corrupt, is not a dict, or holds
            objects other than tensors and plain values.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_NUMPY_SCALAR_GLOBALS):
            data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # the weights-only unpickler met a global or opcode it does not allow
        raise InputError(path, "holds objects other than tensors and plain values (refused without running them: "
                               "a voxseg checkpoint never does)") from None
    except IsADirectoryError:
        raise InputError(path, "is a folder, not a checkpoint file") from None
    except FileNotFoundError:
        raise InputError(path, "checkpoint not found") from None
    except OSError as exc:
        raise InputError(path, f"cannot read the checkpoint ({exc.strerror or exc})") from None
    except (RuntimeError, KeyError, ValueError, TypeError, EOFError, IndexError, AttributeError):
        raise InputError(path, _UNREADABLE) from None
    if not isinstance(data, dict):
        raise InputError(path, f"{_UNREADABLE}: it holds a {type(data).__name__}, not a dict")
    return data


def read_model_weights(path: str | Path, map_location: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The network's state dict (the ``model`` key) of a checkpoint of any voxseg format, read safely
    (:func:`read_checkpoint_file`).

    Raises:
        InputError: as :func:`read_checkpoint_file`, or the file holds no ``model`` dict.
    """
    state = read_checkpoint_file(path, map_location).get("model")
    if not isinstance(state, dict):
        raise InputError(Path(path), f"{_UNREADABLE}: no network weights ('model') in it")
    return state


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
    try:
        model = build_model(plan).to(device)
    except (ValueError, TypeError) as exc:  # a hand-edited network name or argument
        raise InputError(run_dir / "plan.json", f"its network cannot be built: {exc}") from None
    path = checkpoint_path(run_dir, which)
    state = read_model_weights(path, map_location=device)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # first line of torch's message names the first mismatching tensor
        detail = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise InputError(path, f"checkpoint does not fit the network in plan.json ({detail})") from None
    model.eval()
    return model, plan
