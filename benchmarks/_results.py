"""Shared by the benchmarks: save a benchmark's final figures as ``benchmarks/results/<name>.json``.

Each file holds the figures the script printed as its last JSON line, with what is needed to read them later:
the command line, the git commit, the date (UTC) and the machine. ``benchmarks/figures_page.py`` makes
``docs/benchmarks.md`` and the README's figures table from these files.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

RESULTS_DIR = Path(__file__).resolve().parent / "results"

__all__ = ["RESULTS_DIR", "save_result", "machine_description"]


def save_result(name: str, result: dict, argv: Sequence[str], results_dir: Path | None = None) -> Path:
    """Write ``result`` (the figures, JSON-serialisable) to ``<results_dir>/<name>.json``, atomically.

    Args:
        name: the benchmark's name, e.g. ``"hippocampus"``; the file name without ``.json``.
        result: the figures the script printed as its last JSON line.
        argv: the script's command line (``sys.argv``); saved as ``python benchmarks/<script> ARGS``.
        results_dir: where to write (default: ``benchmarks/results`` of this checkout).

    Returns:
        The path written. The file is written to a temporary name in the same folder and renamed, so an
        interrupted run leaves the previous result whole.
    """
    folder = Path(results_dir) if results_dir is not None else RESULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    record = {"name": name, "command": _command(argv), "commit": _COMMIT_AT_START,
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "machine": machine_description(), "figures": result}
    path = folder / f"{name}.json"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle, indent=1, sort_keys=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def machine_description() -> dict:
    """The machine that measured: CPU model, core count, torch threads and version, GPU name (or ``None``), and
    ``cpu_amp_auto``: what ``--amp auto`` chose on the CPU at these threads (``"bf16"`` or ``"none"``; in the
    benchmark's own process this is the choice its training made, the probe being cached per process)."""
    info = {"cpu": _cpu_model(), "cores": os.cpu_count(), "torch_threads": None, "torch": None, "gpu": None,
            "cpu_amp_auto": None, "python": platform.python_version()}
    try:
        import torch
    except ImportError:  # a benchmark without torch still records the rest
        return info
    info["torch_threads"] = torch.get_num_threads()
    info["torch"] = torch.__version__
    try:
        from voxseg.nets import resolve_amp
    except ImportError:  # a benchmark's own environment without voxseg (nnU-Net's) records the rest
        resolve_amp = None
    if resolve_amp is not None:
        info["cpu_amp_auto"] = resolve_amp("auto", torch.device("cpu"))
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _command(argv: Sequence[str]) -> str:
    """``python benchmarks/<script> ARGS`` from ``sys.argv`` (the script named relative to the checkout)."""
    if not argv:
        return "python"
    script = Path(argv[0])
    shown = f"benchmarks/{script.name}" if script.suffix == ".py" else str(script)
    return shlex.join(["python", shown, *argv[1:]])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _git_commit() -> str:
    """The checkout's short commit, ``"unknown"`` outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


_COMMIT_AT_START = _git_commit()
"""The commit checked out when the benchmark started (imported this module): the code it measured, even if the
checkout moves on while a long benchmark runs."""
