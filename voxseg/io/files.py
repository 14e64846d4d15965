"""Writing files whole or not at all: a temporary name beside the target, then a rename."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable

__all__ = ["write_atomic", "save_json_atomic"]


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
