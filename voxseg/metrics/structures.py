"""Which structures to evaluate: label classes, or BraTS regions, from a run, a scheme or the references."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from voxseg.data.labels import LabelScheme
from voxseg.errors import InputError
from voxseg.io.image import read_volume
from voxseg.metrics.evaluate import _find_label_files
from voxseg.plan.plan import RunPlan

__all__ = ["structures_for"]


def structures_for(ref_dir: str | Path, run_dir: str | Path | None = None,
                   label_scheme: str | None = None) -> dict[str, list[int]]:
    """Structures (name -> label values) to evaluate.

    Priority: an explicit ``label_scheme``; else the run's plan (its labels and scheme, regions included);
    else every nonzero value found in the reference files, one structure each.
    """
    names: dict[str, str] = {}
    values: list[int] | None = None
    if run_dir is not None:
        plan_path = Path(run_dir) / "plan.json"
        if not plan_path.exists():
            raise InputError(run_dir, "not a voxseg run folder (no plan.json)")
        plan = RunPlan.load(plan_path)
        if label_scheme is None and plan.scheme.is_region_based:
            return plan.scheme.structures()
        label_scheme = label_scheme or plan.label_scheme
        names, values = plan.label_names, plan.label_values
    if label_scheme == "regions":
        raise InputError(ref_dir, "label scheme 'regions' takes its regions from a run: give --run RUN")
    if label_scheme and label_scheme != "classes":
        return LabelScheme(label_scheme).structures()
    if values is None:
        found: set[int] = set()
        files = sorted(_find_label_files(ref_dir, "reference").values())  # the files evaluate will read
        if not files:
            raise InputError(ref_dir, "no reference NIfTI files found")
        for path in files:
            arr, _ = read_volume(path, dtype=np.int32)
            found.update(int(v) for v in np.unique(arr))
        values = sorted(found | {0})
    return {names.get(str(v), f"label_{v}"): [v] for v in values if v != 0}
