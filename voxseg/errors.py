"""Errors that voxseg reports to a user as one line (the CLI prints them and exits with code 2)."""
from __future__ import annotations

from pathlib import Path

__all__ = ["InputError", "InputProblems"]


class InputError(Exception):
    """Bad input: names the offending file (or folder) and the problem in one line.

    Args:
        path: the file or folder at fault.
        problem: what is wrong with it, phrased for a user (no traceback needed).
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class InputProblems(Exception):
    """Several problems found in one pass over the input; ``problems`` holds one printable line each
    (``PATH: problem``), so a user fixes them all at once instead of one per run."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))
