"""Which evaluated cases a run trained on: each case's role in the run's split, and summaries kept apart.

A run's ``split.json`` names the cases it trained on (``train``) and the ones it validated on (``val``, which
chose the kept checkpoint but were never trained on); every other case was never seen. A cross-validation's
``splits.json`` trains every case in some fold, so all its cases count as training cases (score them with the
out-of-fold predictions of ``voxseg train --folds`` instead). Scores of training cases are optimistic: the
summary of held-out cases (validation and never seen) is the one to report.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from voxseg.data.splits import read_split
from voxseg.metrics.aggregate import summarise

__all__ = ["HELD_OUT", "SPLIT_ROLES", "held_out_summaries", "run_case_roles"]

SPLIT_ROLES = ("training", "validation", "unseen")
"""A case's role in a run: trained on, validated on (held out from training), or in neither list."""

HELD_OUT = ("validation", "unseen")
"""The roles whose cases the run never trained on."""


def run_case_roles(run_dir: str | Path) -> dict[str, str]:
    """``{case id: "training" | "validation"}`` from the run's ``split.json`` (every case of a k-fold
    ``splits.json`` is ``"training"``); cases not listed are never seen (:func:`held_out_summaries` says
    ``"unseen"``). Empty when the run folder holds neither file.

    Raises:
        InputError: a split file that is not a split (one line naming it).
    """
    run_dir = Path(run_dir)
    if (run_dir / "split.json").exists():
        split = read_split(run_dir / "split.json")
        return {**{c: "validation" for c in split["val"]}, **{c: "training" for c in split["train"]}}
    if (run_dir / "splits.json").exists():
        folds = read_split(run_dir / "splits.json", folds=True)
        return {c: "training" for fold in folds for key in ("train", "val") for c in fold[key]}
    return {}


def held_out_summaries(rows: Sequence[Mapping[str, object]]) -> dict:
    """Summaries (:func:`voxseg.metrics.summarise`) of the rows by their ``split`` role: ``"held_out"`` (the
    validation and never-seen cases together) and each role present; a group without rows is left out."""
    out = {}
    groups = {"held_out": HELD_OUT, **{role: (role,) for role in SPLIT_ROLES}}
    for name, roles in groups.items():
        chosen = [r for r in rows if r.get("split") in roles]
        if chosen:
            out[name] = summarise(chosen)
    return out
