"""Which structures to evaluate: label classes, or regions, from a run, a scheme, a dataset.json or the references."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from voxseg.data.labels import LabelScheme, declared_regions_scheme
from voxseg.errors import InputError
from voxseg.io.dataset_json import read_dataset_labels
from voxseg.io.image import read_volume
from voxseg.metrics.evaluate import find_label_files
from voxseg.config import RunPlan

__all__ = ["structures_for"]


def structures_for(ref_dir: str | Path, run_dir: str | Path | None = None,
                   label_scheme: str | None = None) -> dict[str, list[int]]:
    """Structures (name -> label values) to evaluate.

    Priority: an explicit ``label_scheme``; else the run's plan (its labels and scheme, regions included);
    else, for references in an nnU-Net ``labelsTr``/``labelsTs`` folder, the ``dataset.json`` beside it (its
    regions, or its label names); else every nonzero value found in the reference files, one structure each.
    ``"regions"`` takes its regions from the run, or from that ``dataset.json``.
    """
    names: dict[str, str] = {}
    values: list[int] | None = None
    if run_dir is not None:
        plan_path = Path(run_dir) / "plan.json"
        if not plan_path.exists():
            raise InputError(run_dir, "not a voxseg run folder (no plan.json)")
        plan = RunPlan.load(plan_path)
        if label_scheme in (None, "regions") and plan.scheme.is_region_based:
            return plan.scheme.structures()
        label_scheme = label_scheme or plan.label_scheme
        names, values = plan.label_names, plan.label_values
    elif label_scheme in (None, "regions", "classes") and Path(ref_dir).name in ("labelsTr", "labelsTs"):
        try:
            defined = read_dataset_labels(Path(ref_dir).parent)
        except InputError as exc:  # not needed to evaluate: say so and score label values instead
            warnings.warn(f"{exc}; scoring the label values found instead")
            defined = None
        if defined is not None:
            label_names, regions, paint = defined
            if regions and label_scheme != "classes":
                return declared_regions_scheme(regions, paint, Path(ref_dir).parent / "dataset.json").structures()
            names = {str(k): v for k, v in (label_names or {}).items()}
    if label_scheme == "regions":
        raise InputError(ref_dir, "label scheme 'regions' takes its regions from a run (--run RUN) or from the "
                                  "dataset.json beside an nnU-Net labelsTr/ folder; neither declares any")
    if label_scheme and label_scheme != "classes":
        return LabelScheme(label_scheme).structures()
    if values is None:
        found: set[int] = set()
        files = sorted(find_label_files(ref_dir, "reference").values())  # the files evaluate will read
        if not files:
            raise InputError(ref_dir, "no reference NIfTI files found")
        for path in files:
            arr, _ = read_volume(path, dtype=np.int32)
            found.update(int(v) for v in np.unique(arr))
        values = sorted(found | {0})
    return {names.get(str(v), f"label_{v}"): [v] for v in values if v != 0}
