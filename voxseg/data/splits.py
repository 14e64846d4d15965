"""Which cases train and which validate: a seeded split, k seeded folds, and the (editable) files that hold them,
``split.json`` (``{"train": [ids], "val": [ids]}``) and ``splits.json`` (a list of those, one per fold)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from voxseg.errors import InputError

__all__ = ["kfold_splits", "read_split", "split_cases"]


def split_cases(case_ids: list[str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Seeded split by case: ``{"train": [...], "val": [...]}`` (at least one training case)."""
    ids = sorted(case_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = int(round(len(ids) * val_fraction)) if len(ids) > 1 else 0
    n_val = min(n_val, len(ids) - 1)
    val = sorted(ids[i] for i in order[:n_val])
    return {"train": sorted(set(ids) - set(val)), "val": val}


def kfold_splits(case_ids: list[str], k: int, seed: int) -> list[dict[str, list[str]]]:
    """Seeded k-fold partition by case: fold i validates on the i-th part and trains on the rest."""
    if not 2 <= k <= len(case_ids):
        raise ValueError(f"need 2 <= folds <= number of cases ({len(case_ids)}), got {k}")
    ids = sorted(case_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    parts = [sorted(ids[i] for i in chunk) for chunk in np.array_split(order, k)]
    return [{"train": sorted(set(ids) - set(part)), "val": part} for part in parts]


def read_split(path: Path, folds: bool = False) -> dict[str, list[str]] | list[dict[str, list[str]]]:
    """A (possibly hand-edited) ``split.json`` (``{"train": [ids], "val": [ids]}``) or, with ``folds``, a
    ``splits.json`` (a list of them); anything else is one line naming the file (:class:`InputError`)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None

    def valid(split) -> bool:
        return isinstance(split, dict) and all(
            isinstance(split.get(k), list) and all(isinstance(i, str) for i in split[k]) for k in ("train", "val"))

    ok = (isinstance(data, list) and bool(data) and all(valid(x) for x in data)) if folds else valid(data)
    if not ok:
        shape = '{"train": [case ids], "val": [case ids]}'
        raise InputError(path, f"must hold {'a list of ' if folds else ''}{shape}")
    return data
