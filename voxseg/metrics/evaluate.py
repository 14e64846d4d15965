"""Evaluate a folder of predicted label maps against a folder of reference label maps.

Files are matched by case id: the file name without ``.nii``/``.nii.gz`` and without a trailing
``_seg`` or ``_label`` (so ``CASE.nii.gz`` matches ``CASE_seg.nii.gz``). Either folder may be flat
(nnU-Net ``labelsTr``, a prediction folder) or hold one sub-folder per subject (BraTS
``CASE/CASE_seg.nii.gz``; in sub-folders only ``*_seg``/``*_label`` files are labels). When a folder
holds both ``*_seg``/``*_label`` files and other NIfTI files (images), only the former are labels.

Every reference needs a prediction (otherwise :class:`~voxseg.errors.InputError` lists the missing
case ids); predictions without a reference are skipped with a warning. All headers are checked
before any metric is computed: each prediction must have its reference's shape and affine.
"""
from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from voxseg.errors import InputError, InputProblems
from voxseg.io.image import ImageGeometry, is_nifti, read_geometry, read_volume, strip_nifti_suffix
from voxseg.metrics.aggregate import confusion_summary, summarise
from voxseg.metrics.held_out import held_out_summaries
from voxseg.metrics.case import METRIC_NAMES, case_metrics, confusion_matrix
from voxseg.metrics.lesionwise import BRATS_HD95_PENALTY_MM, lesionwise_metrics
from voxseg.metrics.lesionwise import __doc__ as _LESIONWISE_DOC
from voxseg.metrics.policy import EMPTY_MASK_POLICY
from voxseg.metrics.surface import __doc__ as _SURFACE_DOC
from voxseg.io.files import write_atomic

__all__ = ["case_id_from_name", "evaluate_folders", "find_label_files", "CSV_NAME", "JSON_NAME"]

CSV_NAME = "metrics_per_case.csv"
JSON_NAME = "metrics_summary.json"
_LABEL_SUFFIXES = ("_seg", "_label")
_PROBABILITY_SUFFIX = "_prob"
_AFFINE_ATOL_MM = 1e-3
_MAX_LISTED = 20
_LESION_COLUMNS = ("lesion_dice", "lesion_hd95_mm")


def case_id_from_name(name: str) -> str:
    """``'BraTS_001_seg.nii.gz' -> 'BraTS_001'``; ``'hippocampus_001.nii.gz' -> 'hippocampus_001'``."""
    stem = strip_nifti_suffix(name)
    for suffix in _LABEL_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _is_label_name(name: str) -> bool:
    return strip_nifti_suffix(name).endswith(_LABEL_SUFFIXES)


def _label_files_in(folder: Path, only_tagged: bool) -> list[Path]:
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and is_nifti(p.name) and not p.name.startswith(".")
             and not strip_nifti_suffix(p.name).endswith(_PROBABILITY_SUFFIX)]  # voxseg predict --probabilities
    tagged = [p for p in files if _is_label_name(p.name)]
    if only_tagged or not tagged:
        return tagged if only_tagged else files
    # Images beside labels (CASE_flair next to CASE_seg) are skipped; CASE next to CASE_seg is ambiguous.
    tagged_ids = {case_id_from_name(p.name) for p in tagged}
    clash = [p for p in files if not _is_label_name(p.name) and strip_nifti_suffix(p.name) in tagged_ids]
    return tagged + clash


def find_label_files(folder: str | Path, role: str) -> dict[str, Path]:
    """Case id -> label file in a flat folder or in per-subject sub-folders."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, f"{role} folder not found" if not folder.exists() else f"{role} path is not a folder")
    files = _label_files_in(folder, only_tagged=False)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files += _label_files_in(sub, only_tagged=True)
    found: dict[str, Path] = {}
    for path in files:
        case_id = case_id_from_name(path.name)
        if case_id in found:
            raise InputError(folder, f"two {role} files for case {case_id!r}: {found[case_id]} and {path}")
        found[case_id] = path
    if not found:
        raise InputError(folder, f"no {role} NIfTI files (.nii/.nii.gz) found")
    return found


def _listing(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_MAX_LISTED])
    return shown + (f", ... ({len(ids) - _MAX_LISTED} more)" if len(ids) > _MAX_LISTED else "")


def _geometry_problem(pred: ImageGeometry, ref: ImageGeometry, ref_path: Path) -> str | None:
    """A one-line description of how ``pred``'s grid differs from ``ref``'s, or None if it does not."""
    if pred.shape != ref.shape:
        return f"shape (Z,Y,X) {pred.shape} does not match reference {ref_path} {ref.shape}"
    diff = np.abs(np.asarray(pred.affine) - np.asarray(ref.affine))
    if np.all(diff <= _AFFINE_ATOL_MM):
        return None
    parts = []
    if not np.allclose(pred.spacing, ref.spacing, atol=_AFFINE_ATOL_MM, rtol=0):
        parts.append(f"spacing {_mm_triple(pred.spacing, 4)} vs {_mm_triple(ref.spacing, 4)} mm")
    if np.any(diff[:3, 3] > _AFFINE_ATOL_MM):
        parts.append(f"origin {_mm_triple(pred.affine[:3, 3])} vs {_mm_triple(ref.affine[:3, 3])} mm")
    if not parts:
        parts.append("direction differs")
    return f"affine does not match reference {ref_path}: " + "; ".join(parts) + f" (max element difference {diff.max():.4g})"


def _read_labels(path: Path) -> np.ndarray:
    """A label map as int32; float files are accepted when every value is an integer (some tools write
    labels as float32), anything else (NaN, 0.3, ...) is not a label map."""
    array, _ = read_volume(path, dtype=None)
    if array.dtype.kind == "f":
        rounded = np.rint(array)
        bad = ~np.isfinite(array) | (np.abs(array - rounded) > 1e-3)
        if bad.any():
            raise InputError(path, f"not a label map: {int(bad.sum())} voxel(s) hold non-integer values "
                                   f"(e.g. {array[bad].flat[0]:g})")
        array = rounded
    return array.astype(np.int32, copy=False)


def _mm_triple(values, digits: int = 3) -> str:
    """``(1.5, 0.0, -2.25)``: plain numbers rounded to ``digits`` decimals (no numpy reprs in messages)."""
    return str(tuple(round(float(v), digits) for v in values))


def _json_safe(obj: object) -> object:
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _write_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def _csv_text(rows: Sequence[Mapping[str, object]], extra: Sequence[str] = ()) -> str:
    numeric = (*METRIC_NAMES, *extra)
    columns = ["case_id", "structure", *numeric, "ref_empty", "pred_empty"]
    if rows and "split" in rows[0]:
        columns.insert(1, "split")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: (repr(float(row[c])) if c in numeric else row[c]) for c in columns})
    return buffer.getvalue()


def _add_confusion(total: dict[tuple[int, int], int], pred: np.ndarray, ref: np.ndarray) -> None:
    """Add one case's voxel counts per (reference, prediction) label pair to ``total``."""
    labels = np.union1d(np.unique(pred), np.unique(ref)).tolist()
    matrix = confusion_matrix(pred, ref, labels)
    for i, r in enumerate(labels):
        for j, c in enumerate(labels):
            if matrix[i, j]:
                total[(int(r), int(c))] = total.get((int(r), int(c)), 0) + int(matrix[i, j])


def _confusion_document(total: dict[tuple[int, int], int], structures: Mapping[str, Sequence[int]]) -> dict:
    labels = sorted({0} | {int(v) for vs in structures.values() for v in vs} | {v for pair in total for v in pair})
    index = {v: i for i, v in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for (r, c), count in total.items():
        matrix[index[r], index[c]] = count
    return confusion_summary(matrix, labels)


def _paired_label_files(pred_dir: Path, ref_dir: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """``(predictions, references)`` by case id; every reference needs a prediction (InputError listing the
    missing ids), predictions without a reference are ignored with a warning."""
    refs = find_label_files(ref_dir, "reference")
    preds = find_label_files(pred_dir, "prediction")
    missing = sorted(set(refs) - set(preds))
    if missing:
        raise InputError(pred_dir, f"no prediction for {len(missing)} of {len(refs)} reference case(s): {_listing(missing)}")
    extra = sorted(set(preds) - set(refs))
    if extra:
        warnings.warn(f"{pred_dir}: ignoring {len(extra)} prediction(s) without a reference: {_listing(extra)}", stacklevel=3)
    return preds, refs


def _reference_spacings(case_ids: Sequence[str], preds: Mapping[str, Path],
                        refs: Mapping[str, Path]) -> dict[str, tuple[float, ...]]:
    """Each reference's voxel spacing (mm), after checking every header before the slow part: all the
    predictions whose geometry differs from their reference are reported at once (InputProblems)."""
    spacings, problems = {}, []
    for case_id in case_ids:
        ref_geo, pred_geo = read_geometry(refs[case_id]), read_geometry(preds[case_id])
        problem = _geometry_problem(pred_geo, ref_geo, refs[case_id])
        if problem:
            problems.append(str(InputError(preds[case_id], problem)))
        spacings[case_id] = ref_geo.spacing
    if problems:
        raise InputProblems(problems)
    return spacings


def _score_cases(case_ids: Sequence[str], preds: Mapping[str, Path], refs: Mapping[str, Path],
                 spacings: Mapping[str, tuple[float, ...]], structures: Mapping[str, Sequence[int]],
                 penalty_mm: float | None, tolerance_mm: float, lesion_options: dict | None,
                 progress: bool) -> tuple[list[dict], dict[tuple[int, int], int], dict[tuple[str, int], list[str]]]:
    """``(rows, confusion, unscored)``: one row per case x structure (with the lesion-wise metrics when
    ``lesion_options`` holds :func:`lesionwise_metrics` keywords), voxel counts ``(pred, ref) -> n`` over all
    cases, and ``(side, label value) -> case ids`` for values that no structure scores."""
    rows: list[dict] = []
    confusion: dict[tuple[int, int], int] = {}
    scored = {0} | {int(v) for labels in structures.values() for v in labels}
    unscored: dict[tuple[str, int], list[str]] = {}
    for case_id in tqdm(case_ids, desc="metrics", unit="case", disable=None if progress else True):
        pred, ref = _read_labels(preds[case_id]), _read_labels(refs[case_id])
        per_structure = case_metrics(pred, ref, spacings[case_id], structures, penalty_mm, tolerance_mm=tolerance_mm)
        if lesion_options is not None:
            for name, labels in structures.items():
                per_structure[name].update(lesionwise_metrics(
                    np.isin(pred, labels), np.isin(ref, labels), spacings[case_id], **lesion_options))
        _add_confusion(confusion, pred, ref)
        for which, labels in (("predicted", pred), ("in the reference", ref)):
            for value in set(np.unique(labels).tolist()) - scored:
                unscored.setdefault((which, int(value)), []).append(case_id)
        rows += [{"case_id": case_id, "structure": name, **values} for name, values in per_structure.items()]
    return rows, confusion, unscored


def _warn_unscored(unscored: Mapping[tuple[str, int], list[str]], pred_dir: Path, ref_dir: Path,
                   structures: Mapping[str, Sequence[int]]) -> None:
    """One warning per label value that is predicted (or in the references) but belongs to no structure,
    e.g. BraTS 2018 labels (4) scored as BraTS 2023's (3)."""
    for (which, value), ids in sorted(unscored.items()):
        folder = pred_dir if which == "predicted" else ref_dir
        warnings.warn(f"{folder}: label {value} is {which} in {len(ids)} case(s) ({_listing(ids)}) but belongs "
                      f"to no evaluated structure ({', '.join(structures)}): not scored (see the confusion matrix)",
                      stacklevel=3)


def _summary_document(summary: dict, structures: Mapping[str, Sequence[int]], pred_dir: Path, ref_dir: Path,
                      penalty_mm: float | None, tolerance_mm: float, lesion_options: dict | None) -> dict:
    """The content of ``metrics_summary.json``: summary, structures, settings and the definitions used."""
    document = {
        "summary": summary,
        "structures": {name: [int(v) for v in labels] for name, labels in structures.items()},
        "settings": {"penalty_mm": penalty_mm, "penalty_default": "volume diagonal in mm per case",
                     "tolerance_mm": tolerance_mm, "lesionwise": lesion_options is not None},
        "empty_mask_policy": EMPTY_MASK_POLICY,
        "surface_definitions": " ".join(_SURFACE_DOC.split()),
        "volume_difference": "rel_vol_diff = |V_ref - V_pred| / V_ref (Archit & Adilina 2022, eq. 9); vol_diff_ml = V_pred - V_ref",
        "pred_dir": str(pred_dir),
        "ref_dir": str(ref_dir),
    }
    if lesion_options is not None:
        document["settings"].update({
            "lesion_dilation_iterations": lesion_options["dilation_iterations"],
            "lesion_min_volume_mm3": lesion_options["min_lesion_volume_mm3"],
            "lesion_penalty_mm": lesion_options["penalty_mm"],
            "lesion_min_fp_volume_mm3": lesion_options["min_fp_volume_mm3"],
            "lesion_connectivity": 26,
        })
        document["lesionwise_definition"] = " ".join(_LESIONWISE_DOC.split())
    return document


def evaluate_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    out_dir: str | Path,
    structures: Mapping[str, Sequence[int]],
    penalty_mm: float | None = None,
    progress: bool = True,
    *,
    tolerance_mm: float = 1.0,
    lesionwise: bool = False,
    lesion_dilation_iterations: int = 3,
    lesion_min_volume_mm3: float = 50.0,
    lesion_penalty_mm: float = BRATS_HD95_PENALTY_MM,
    lesion_min_fp_volume_mm3: float = 0.0,
    case_roles: Mapping[str, str] | None = None,
) -> tuple[list[dict], dict]:
    """Compute every metric of every case and structure, write a CSV and a JSON summary.

    Args:
        pred_dir: folder of predicted label maps (``CASE.nii.gz``; flat or per-subject folders).
        ref_dir: folder of reference label maps (``CASE.nii.gz``, ``CASE_seg.nii.gz`` or
            ``CASE/CASE_seg.nii.gz``).
        out_dir: where ``metrics_per_case.csv`` (one row per case x structure) and
            ``metrics_summary.json`` (summary, structures, empty-mask policy, settings) are written,
            each atomically (temporary name, then rename). Created if missing.
        structures: name -> label values, e.g. ``{"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}``.
        penalty_mm: HD95/HD/ASSD when exactly one mask is empty; ``None`` = each case's volume
            diagonal in mm.
        progress: show a tqdm progress bar on stderr.
        tolerance_mm: surface Dice tolerance in mm.
        lesionwise: also compute the BraTS 2023 lesion-wise Dice and HD95 of every structure
            (:func:`voxseg.metrics.lesionwise.lesionwise_metrics`), as the ``lesion_dice`` and
            ``lesion_hd95_mm`` columns (the rows also hold the lesion counts ``n_*_lesions``).
        lesion_dilation_iterations: reference dilation (voxels) for grouping and matching lesions;
            BraTS-GLI 2023: 3.
        lesion_min_volume_mm3: reference lesions of at most this volume are not scored; BraTS-GLI 2023: 50.
        lesion_penalty_mm: lesion-wise HD95 of a missed lesion or a false positive; BraTS: 374.
        lesion_min_fp_volume_mm3: false-positive components of at most this volume are ignored;
            0 (default) = none, as in BraTS 2023.
        case_roles: case id -> ``"training"`` or ``"validation"``, the case's role in the run whose
            predictions these are (:func:`voxseg.metrics.held_out.run_case_roles`); None: not known. When
            given, every row gets a ``split`` column (``"training"``, ``"validation"`` or ``"unseen"``, for
            cases the run never saw), the summary ``"case_splits"`` (case id -> that role) and ``"by_split"``
            (:func:`voxseg.metrics.held_out.held_out_summaries`: held-out cases apart from trained ones).

    Returns:
        ``(rows, summary)``: rows as in the CSV (``case_id``, ``structure``, metrics, flags), sorted by
        case id, and :func:`voxseg.metrics.summarise` of them plus ``summary["confusion_matrix"]``:
        voxel counts summed over cases (:func:`voxseg.metrics.aggregate.confusion_summary`; labels are
        0, every structure label and every value found in a prediction or reference).

    Raises:
        InputError: a folder is missing or has no NIfTI files, a case has two files, or references lack
            predictions (all missing ids in one line).
        InputProblems: predictions whose shape/affine differ from their references (one line each,
            naming both files).
    """
    pred_dir, ref_dir, out_dir = Path(pred_dir), Path(ref_dir), Path(out_dir)
    if not structures:
        raise ValueError("structures is empty: give at least one {name: [label values]}")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "output path exists and is not a folder")
    preds, refs = _paired_label_files(pred_dir, ref_dir)
    case_ids = sorted(refs)
    spacings = _reference_spacings(case_ids, preds, refs)
    lesion_options = None if not lesionwise else {
        "dilation_iterations": lesion_dilation_iterations, "min_lesion_volume_mm3": lesion_min_volume_mm3,
        "penalty_mm": lesion_penalty_mm, "min_fp_volume_mm3": lesion_min_fp_volume_mm3}
    rows, confusion, unscored = _score_cases(case_ids, preds, refs, spacings, structures, penalty_mm, tolerance_mm,
                                             lesion_options, progress)
    _warn_unscored(unscored, pred_dir, ref_dir, structures)
    if case_roles is not None:
        rows = [{"case_id": r["case_id"], "split": case_roles.get(str(r["case_id"]), "unseen"), **r} for r in rows]
    summary = summarise(rows)
    if case_roles is not None:
        summary["case_splits"] = {case_id: case_roles.get(case_id, "unseen") for case_id in case_ids}
        summary["by_split"] = held_out_summaries(rows)
    summary["confusion_matrix"] = _confusion_document(confusion, structures)
    document = _summary_document(summary, structures, pred_dir, ref_dir, penalty_mm, tolerance_mm, lesion_options)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(out_dir / CSV_NAME, _csv_text(rows, _LESION_COLUMNS if lesionwise else ()))
    _write_atomic(out_dir / JSON_NAME, json.dumps(_json_safe(document), indent=2, allow_nan=False) + "\n")
    return rows, summary
