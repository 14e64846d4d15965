"""Post-processing of label maps, each rule kept only if it raises cross-validation Dice.

Rules (:class:`PostRule`, one dataclass, ``kind`` says which):

* ``largest_component``: keep only the largest connected component of a structure (a class, or a
  region such as BraTS WT = labels {1, 2, 4}); the other voxels of the structure become ``fill``.
* ``remove_small``: components of a structure smaller than ``min_voxels`` become ``fill``.
* ``et_to_ncr``: BraTS rule: when the whole enhancing tumour (``labels``, e.g. [4]) has fewer than
  ``min_voxels`` voxels, relabel it as necrosis / non-enhancing core (``fill``, label 1). Cases without
  enhancing tumour are common (low-grade gliomas) and a few false ET voxels cost ET Dice 1 -> 0,
  hence the rule (Isensee et al. 2018, "No New-Net"). Henry et al. (2021) do not use or state a threshold:
  :data:`DEFAULT_ET_THRESHOLD` (500 voxels) is voxseg's default, and :func:`candidate_rules` offers
  several thresholds so cross-validation picks one.

Connectivity is face-connected (6 neighbours in 3-D), the scipy default, as nnU-Net's post-processing.

Which rules a run keeps is chosen on its out-of-fold Dice (``voxseg.metrics.choose_run_postprocessing``,
greedy, as in nnU-Net) and saved as ``postprocessing.json`` in the run folder, which ``voxseg predict`` applies
(:func:`load_postprocessing`) unless ``--no-postprocess``.

References:
    Isensee F. et al. (2019) No New-Net. BrainLes 2018, LNCS 11384, 234-244.
    Isensee F. et al. (2021) nnU-Net: a self-configuring method for deep learning-based biomedical
    image segmentation. Nature Methods 18:203-211 (post-processing by cross-validation).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from voxseg.data.labels import BRATS_REGIONS, LabelScheme
from voxseg.errors import InputError

__all__ = ["PostRule", "RULE_KINDS", "DEFAULT_ET_THRESHOLD", "POSTPROCESSING_FILE",
           "apply_postprocessing", "candidate_rules", "load_postprocessing"]

RULE_KINDS: tuple[str, ...] = ("largest_component", "remove_small", "et_to_ncr")
DEFAULT_ET_THRESHOLD = 500
"""Voxels; enhancing tumour smaller than this becomes necrosis under ``et_to_ncr`` (not from Henry et al. (2021))."""
POSTPROCESSING_FILE = "postprocessing.json"


@dataclass
class PostRule:
    """One post-processing rule on a label map of original label values.

    Attributes:
        kind: one of :data:`RULE_KINDS`.
        structure: a name for tables (``"WT"``, ``"liver"``, ``"all foreground"``).
        labels: label values making up the structure.
        min_voxels: ``remove_small``: smallest component kept; ``et_to_ncr``: smallest ET volume kept
            as ET (voxels, in the label map's own grid).
        fill: label value written where voxels are removed (``et_to_ncr``: the necrosis label, 1).
    """

    kind: str
    structure: str
    labels: list[int]
    min_voxels: int = 0
    fill: int = 0

    def __post_init__(self) -> None:
        if self.kind not in RULE_KINDS:
            raise ValueError(f"unknown post-processing rule {self.kind!r}; choose one of {', '.join(RULE_KINDS)}")
        self.labels = [int(v) for v in self.labels]
        if not self.labels:
            raise ValueError(f"rule {self.kind} on {self.structure!r} has no label values")
        self.min_voxels, self.fill = int(self.min_voxels), int(self.fill)

    def describe(self) -> str:
        if self.kind == "largest_component":
            return f"largest component of {self.structure}"
        if self.kind == "remove_small":
            return f"remove {self.structure} components < {self.min_voxels} voxels"
        return f"{self.structure} < {self.min_voxels} voxels -> label {self.fill}"

    def apply(self, label: np.ndarray) -> np.ndarray:
        """Return a post-processed copy of ``label`` ``(Z, Y, X)`` (the input is not modified)."""
        label = np.asarray(label)
        mask = np.isin(label, self.labels)
        out = label.copy()
        if not mask.any():
            return out
        if self.kind == "et_to_ncr":
            if np.count_nonzero(mask) < self.min_voxels:
                out[mask] = self.fill
            return out
        components, n = ndimage.label(mask)
        if n <= 1 and self.kind == "largest_component":
            return out
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        if self.kind == "largest_component":
            remove = mask & (components != int(np.argmax(sizes)))
        else:
            remove = (sizes < self.min_voxels)[components] & mask
        out[remove] = self.fill
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> PostRule:
        return cls(**{k: data[k] for k in ("kind", "structure", "labels", "min_voxels", "fill") if k in data})


def apply_postprocessing(label: np.ndarray, rules: Iterable[PostRule]) -> np.ndarray:
    """Apply ``rules`` in order to a ``(Z, Y, X)`` label map; returns a new array."""
    out = np.asarray(label)
    for rule in rules:
        out = rule.apply(out)
    return out


def candidate_rules(label_scheme: LabelScheme | str, label_values: Sequence[int],
                    et_thresholds: Sequence[int] = (200, DEFAULT_ET_THRESHOLD, 1000),
                    min_voxels: Sequence[int] = (10,)) -> list[PostRule]:
    """Default candidates for ``voxseg.metrics.choose_postprocessing``, in the order they are tried.

    ``classes``: the largest component of all foreground together, then of each class; then removal
    of small components of each class. BraTS schemes: largest component of WT, removal of small ET
    components, then ``et_to_ncr`` at each of ``et_thresholds`` (greedy: a later threshold is kept only
    if it improves on the rules kept before it). Scheme ``regions``: largest component of the first
    (largest) region, then removal of small components of each later region (their voxels take the
    label of the region before, which holds them when regions are nested).

    Args:
        label_scheme: a :class:`voxseg.data.LabelScheme` or the name of one without settings.
        label_values: the run's label values (0 first).
        et_thresholds: ET volumes (voxels) to try for ``et_to_ncr``.
        min_voxels: component sizes (voxels) to try for ``remove_small``.
    """
    scheme = label_scheme if isinstance(label_scheme, LabelScheme) else LabelScheme(label_scheme)
    if scheme.name in BRATS_REGIONS:
        regions = scheme.regions
        et = list(regions["ET"])
        rules = [PostRule("largest_component", "WT", list(regions["WT"]))]
        rules += [PostRule("remove_small", "ET", et, n, fill=1) for n in min_voxels]
        rules += [PostRule("et_to_ncr", "ET", et, t, fill=1) for t in et_thresholds]
        return rules
    if scheme.is_region_based:
        names, paint = list(scheme.regions), scheme.paint_labels
        rules = [PostRule("largest_component", names[0], list(scheme.regions[names[0]]))]
        rules += [PostRule("remove_small", names[i], list(scheme.regions[names[i]]), n, fill=paint[i - 1])
                  for i in range(1, len(names)) for n in min_voxels]
        return rules
    foreground = [int(v) for v in label_values if int(v) != 0]
    rules = [PostRule("largest_component", "all foreground", foreground)] if len(foreground) > 1 else []
    rules += [PostRule("largest_component", f"label {v}", [v]) for v in foreground]
    rules += [PostRule("remove_small", f"label {v}", [v], n) for n in min_voxels for v in foreground]
    return rules


def load_postprocessing(run_dir: str | Path) -> list[PostRule] | None:
    """The rules saved in ``run_dir/postprocessing.json``, or ``None`` when there is no such file."""
    path = Path(run_dir) / POSTPROCESSING_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        return [PostRule.from_dict(r) for r in data["rules"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InputError(path, f"unreadable post-processing rules: {exc}") from None
