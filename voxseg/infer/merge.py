"""Merge the label maps of several pipelines, label by label (original label values).

Henry et al. (2021), second ensembling step and Table 1: two pipelines each produce a label map; a
:class:`MergeTable` says, label by label, which pipeline decides. The built-in ``henry2020`` table
keeps pipeline A's necrosis (1) and enhancing tumour (4) everywhere, and takes B's label where A
predicts background or oedema and B predicts background or oedema::

                 A: 0   1   2   4
        B: 0        0   1   0   4
           1        0   1   2   4
           2        2   1   2   4
           4        0   1   2   4

References:
    Henry T. et al. (2021) Brain tumor segmentation with self-ensembled, deeply-supervised 3D U-net
    neural networks: a BraTS 2020 challenge solution. BrainLes 2020, LNCS 12658, Table 1.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from voxseg.errors import InputError

__all__ = ["MergeRule", "MergeTable", "MERGE_TABLES", "load_merge_table"]


@dataclass
class MergeRule:
    """Where every pipeline named in ``where`` predicts one of its listed labels, the output is ``take``.

    Attributes:
        take: a pipeline name (its label is written) or a fixed label value (int).
        where: pipeline name -> label values it must predict there for the rule to apply.
    """

    take: str | int
    where: dict[str, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"take": self.take, "where": {k: list(v) for k, v in self.where.items()}}

    @classmethod
    def from_dict(cls, data: Mapping) -> MergeRule:
        return cls(take=data["take"], where={str(k): [int(x) for x in v] for k, v in dict(data["where"]).items()})


@dataclass
class MergeTable:
    """Per-voxel merge of the label maps of several pipelines (original label values).

    The output starts as the ``default`` pipeline's labels; then, at each voxel, the FIRST rule whose
    conditions hold decides (later rules do not override it).

    Attributes:
        name: table name (``"henry2020"``).
        pipelines: pipeline names, in the order the label maps are given (``["A", "B"]``).
        default: pipeline whose label is kept where no rule applies.
        rules: :class:`MergeRule` list, in priority order.
        description: free text (source, meaning).
    """

    name: str
    pipelines: list[str]
    default: str
    rules: list[MergeRule] = field(default_factory=list)
    description: str = ""

    def __post_init__(self) -> None:
        self.pipelines = [str(p) for p in self.pipelines]
        if len(set(self.pipelines)) != len(self.pipelines) or len(self.pipelines) < 2:
            raise ValueError(f"merge table {self.name!r}: needs >= 2 distinct pipelines, got {self.pipelines}")
        names = set(self.pipelines)
        used = {self.default} | {r.take for r in self.rules if isinstance(r.take, str)}
        used |= {k for r in self.rules for k in r.where}
        if used - names:
            raise ValueError(f"merge table {self.name!r}: unknown pipelines {sorted(used - names)}; "
                             f"declared {self.pipelines}")

    def labels_used(self) -> set[int]:
        """Label values the rules mention (to check against the runs' label values)."""
        out = {int(r.take) for r in self.rules if not isinstance(r.take, str)}
        return out | {v for r in self.rules for values in r.where.values() for v in values}

    def merge(self, maps: Sequence[np.ndarray] | Mapping[str, np.ndarray]) -> np.ndarray:
        """Merge label maps, one per pipeline (a list in :attr:`pipelines` order, or a name -> map dict).

        Returns:
            ``(Z, Y, X)`` label map, dtype of the default pipeline's map.
        """
        if not isinstance(maps, Mapping):
            if len(maps) != len(self.pipelines):
                raise ValueError(f"merge table {self.name!r} needs {len(self.pipelines)} label maps "
                                 f"({', '.join(self.pipelines)}), got {len(maps)}")
            maps = dict(zip(self.pipelines, maps))
        maps = {k: np.asarray(v) for k, v in maps.items()}
        shapes = {v.shape for v in maps.values()}
        if len(shapes) != 1:
            raise ValueError(f"label maps to merge have different shapes: {sorted(shapes)}")
        out = maps[self.default].copy()
        decided = np.zeros(out.shape, bool)
        for rule in self.rules:
            hit = ~decided
            for pipeline, values in rule.where.items():
                hit &= np.isin(maps[pipeline], values)
            out[hit] = maps[rule.take][hit] if isinstance(rule.take, str) else int(rule.take)
            decided |= hit
        return out

    def lookup(self, values: Sequence[int]) -> dict[tuple[int, ...], int]:
        """The whole table: (label of each pipeline, in :attr:`pipelines` order) -> merged label."""
        import itertools

        combos = list(itertools.product(values, repeat=len(self.pipelines)))
        maps = [np.array([c[i] for c in combos]) for i in range(len(self.pipelines))]
        merged = self.merge(maps)
        return {c: int(m) for c, m in zip(combos, merged)}

    def to_dict(self) -> dict:
        return {"name": self.name, "pipelines": list(self.pipelines), "default": self.default,
                "rules": [r.to_dict() for r in self.rules], "description": self.description}

    @classmethod
    def from_dict(cls, data: Mapping) -> MergeTable:
        return cls(name=str(data.get("name", "custom")), pipelines=list(data["pipelines"]),
                   default=str(data["default"]), rules=[MergeRule.from_dict(r) for r in data.get("rules", [])],
                   description=str(data.get("description", "")))


MERGE_TABLES: dict[str, MergeTable] = {
    "henry2020": MergeTable(
        name="henry2020", pipelines=["A", "B"], default="A",
        rules=[MergeRule(take="B", where={"A": [0, 2], "B": [0, 2]})],
        description="Henry et al. (2021), Table 1: A's NCR/NET (1) and ET are kept; where A says "
                    "background or oedema and B says oedema or background, B's label is kept. Give pipeline A "
                    "first (the better ET/TC ensemble), B second (the better WT ensemble)."),
}
"""Built-in merge tables by name."""


def load_merge_table(name_or_path: str | Path) -> MergeTable:
    """A built-in table by name (:data:`MERGE_TABLES`) or a JSON file of :meth:`MergeTable.to_dict` form.

    Raises:
        InputError: neither a known name nor a readable table file.
    """
    key = str(name_or_path)
    if key in MERGE_TABLES:
        return copy.deepcopy(MERGE_TABLES[key])
    path = Path(key)
    if not path.exists():
        raise InputError(path, f"no such merge table file; built-in tables: {', '.join(MERGE_TABLES)}")
    try:
        return MergeTable.from_dict(json.loads(path.read_text()))
    except KeyError as exc:
        raise InputError(path, f"not a valid merge table: missing key {exc}") from None
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(path, f"not a valid merge table: {exc}") from None
