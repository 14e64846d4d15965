"""Writing files whole or not at all: a temporary name beside the target, then a rename; output folders that
are checked before any work and removed again when the work that made them fails."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from voxseg.errors import InputError

__all__ = ["write_atomic", "save_json_atomic", "check_writable", "made_folder"]


def write_atomic(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Call ``write(file)`` on a temporary file (binary) beside ``path``, then rename it to ``path`` (never
    half-written; the temporary file is removed if writing fails)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:  # an error (or Ctrl-C) while writing leaves neither the file nor its temporary copy
        tmp.unlink(missing_ok=True)
    return path


def save_json_atomic(obj: Any, path: str | Path) -> Path:
    """Write JSON to a temporary name beside ``path``, then rename (never half-written)."""
    return write_atomic(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()))


def check_writable(folder: str | Path) -> None:
    """Refuse, as an :class:`InputError` naming the path at fault, an output folder that cannot be made or
    written: the folder (or the nearest part of its path that exists) is a file, or is not writable. Touches
    nothing."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and not existing.is_symlink() and existing != existing.parent:
        existing = existing.parent
    if not existing.exists():
        raise InputError(existing, "cannot make an output folder here (a broken symbolic link)")
    if not existing.is_dir():
        what = "exists and is not a folder" if existing == folder else f"is a file, so the folder {folder} cannot be made"
        raise InputError(existing, what)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(existing, "cannot write here (permission denied); choose an output folder you may write to")


@contextlib.contextmanager
def made_folder(folder: str | Path) -> Iterator[Path]:
    """Make ``folder`` (and missing parents) for the block; when the block fails or is interrupted, the folders
    made here are removed again if they are still empty (finished files are kept)."""
    folder = Path(folder)
    check_writable(folder)
    made = []
    for part in [*reversed(folder.parents), folder]:
        if not part.exists():
            made.append(part)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(folder, f"cannot make the output folder ({exc.strerror or exc})") from None
    try:
        yield folder
    except BaseException:
        for part in reversed(made):
            with contextlib.suppress(OSError):
                part.rmdir()  # only an empty folder goes
        raise
