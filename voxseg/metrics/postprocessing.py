"""Post-processing chosen by cross-validation: each candidate rule (:mod:`voxseg.infer.postprocess`) is kept
only if it raises the out-of-fold Dice.

Selection (:func:`choose_postprocessing`) is greedy in the candidates' order, as in nnU-Net
(Isensee et al. 2021): apply the candidate on top of the rules kept so far; keep it only if the
mean over cases and structures of the Dice strictly increases (by more than ``min_gain``). The
chosen rules and the before/after table are saved as ``postprocessing.json`` in the run folder,
which ``voxseg predict`` applies unless ``--no-postprocess``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from voxseg.errors import InputError
from voxseg.infer.postprocess import POSTPROCESSING_FILE, PostRule, candidate_rules
from voxseg.io.image import read_volume
from voxseg.metrics.overlap import overlap_metrics
from voxseg.metrics.structures import structures_for
from voxseg.config import RunPlan
from voxseg.io.files import save_json_atomic

__all__ = ["PostprocessingChoice", "choose_postprocessing", "choose_run_postprocessing", "save_postprocessing"]


def _dice_table(labels: Sequence[np.ndarray], refs: Sequence[np.ndarray],
                structures: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """Mean Dice over cases per structure (empty/empty = 1, voxseg's policy)."""
    out = {}
    for name, values in structures.items():
        scores = [overlap_metrics(np.isin(p, values), np.isin(r, values), (1.0,) * r.ndim)["dice"]
                  for p, r in zip(labels, refs)]
        out[name] = float(np.mean(scores))
    return out


@dataclass
class PostprocessingChoice:
    """Result of :func:`choose_postprocessing`.

    Attributes:
        rules: the rules kept, in application order.
        table: one row per candidate: ``rule`` (dict), ``description``, ``kept``, ``dice_before`` and
            ``dice_after`` (structure -> mean Dice over cases), ``mean_before``, ``mean_after``.
        baseline: structure -> mean Dice without post-processing.
    """

    rules: list[PostRule]
    table: list[dict] = field(default_factory=list)
    baseline: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"rules": [r.to_dict() for r in self.rules], "baseline_dice": self.baseline,
                "criterion": "kept if the mean Dice over cases and structures increases (greedy, in order)",
                "selection": self.table}


def choose_postprocessing(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    candidates: Sequence[PostRule],
    structures: Mapping[str, Sequence[int]],
    to_labels: Callable[[np.ndarray], np.ndarray] | None = None,
    min_gain: float = 0.0,
) -> PostprocessingChoice:
    """Pick the candidate rules that improve cross-validation Dice (greedy, in order).

    Args:
        pairs: ``(prediction, reference)`` per validation case. A prediction is a ``(Z, Y, X)`` label map
            of original values, or ``(K, Z, Y, X)`` probabilities turned into one by ``to_labels``.
            References are ``(Z, Y, X)`` label maps of original values.
        candidates: rules to try, e.g. :func:`candidate_rules`.
        structures: name -> label values scored, e.g. ``LabelScheme("brats").structures()``.
        to_labels: probabilities -> label map (needed only when probabilities are given).
        min_gain: a rule must raise the mean Dice by more than this to be kept.

    Returns:
        :class:`PostprocessingChoice` (rules kept + table of Dice before/after each candidate).
    """
    preds, refs = [], []
    for pred, ref in pairs:
        pred, ref = np.asarray(pred), np.asarray(ref)
        if pred.ndim == ref.ndim + 1:
            if to_labels is None:
                raise ValueError("probabilities were given without to_labels to turn them into label maps")
            pred = to_labels(pred)
        if pred.shape != ref.shape:
            raise ValueError(f"prediction shape {pred.shape} != reference shape {ref.shape}")
        preds.append(pred)
        refs.append(ref)
    if not preds:
        raise ValueError("no (prediction, reference) pairs to choose post-processing from")
    current = _dice_table(preds, refs, structures)
    choice = PostprocessingChoice(rules=[], baseline=dict(current))
    for rule in candidates:
        trial = [rule.apply(p) for p in preds]
        after = _dice_table(trial, refs, structures)
        before_mean, after_mean = float(np.mean(list(current.values()))), float(np.mean(list(after.values())))
        kept = after_mean > before_mean + min_gain
        choice.table.append({"rule": rule.to_dict(), "description": rule.describe(), "kept": bool(kept),
                             "dice_before": dict(current), "dice_after": after,
                             "mean_before": before_mean, "mean_after": after_mean})
        if kept:
            choice.rules.append(rule)
            preds, current = trial, after
    return choice


def save_postprocessing(choice: PostprocessingChoice, run_dir: str | Path) -> Path:
    """Write ``run_dir/postprocessing.json`` (atomically); ``voxseg.infer.load_postprocessing`` reads it."""
    return save_json_atomic(choice.to_dict(), Path(run_dir) / POSTPROCESSING_FILE)


def choose_run_postprocessing(run_dir: str | Path, candidates: Sequence[PostRule] | None = None,
                              pred_dir: str | Path | None = None, ref_dir: str | Path | None = None,
                              save: bool = True) -> PostprocessingChoice:
    """Choose post-processing for a run from its out-of-fold predictions and save ``postprocessing.json``.

    Args:
        run_dir: a run folder with ``plan.json`` (e.g. a k-fold run after its out-of-fold evaluation).
        candidates: rules to try; default :func:`candidate_rules` for the run's label scheme.
        pred_dir: predicted label maps ``<case>.nii.gz`` (default ``run_dir/oof/pred``).
        ref_dir: references with the same file names (default ``run_dir/oof/ref``).
        save: write ``run_dir/postprocessing.json``.

    Raises:
        InputError: no plan, or no prediction with a matching reference.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "plan.json").exists():
        raise InputError(run_dir, "not a voxseg run folder (no plan.json)")
    plan = RunPlan.load(run_dir / "plan.json")
    pred_dir = Path(pred_dir) if pred_dir is not None else run_dir / "oof" / "pred"
    ref_dir = Path(ref_dir) if ref_dir is not None else run_dir / "oof" / "ref"
    names = sorted(p.name for p in pred_dir.glob("*.nii.gz") if (ref_dir / p.name).exists())
    if not names:
        raise InputError(pred_dir, f"no predictions with a reference of the same name in {ref_dir}")
    pairs = ((read_volume(pred_dir / n, dtype=np.int32)[0], read_volume(ref_dir / n, dtype=np.int32)[0])
             for n in names)
    if candidates is None:
        candidates = candidate_rules(plan.scheme, plan.label_values)
    choice = choose_postprocessing(pairs, candidates, structures_for(ref_dir, run_dir))
    if save:
        save_postprocessing(choice, run_dir)
    return choice
