"""An evaluation's section of the report: summary table, Dice per case, the best, median and worst case drawn
over their image, every case (worst first), and the confusion matrix."""
from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from voxseg.errors import InputError
from voxseg.io import load_dataset, read_volume
from voxseg.metrics.evaluate import CSV_NAME, JSON_NAME, find_label_files
from voxseg.report.curves import dice_per_case_figure, figure_png, overlay_figure
from voxseg.report.html_parts import _picture, _read_json, _table, _text

__all__ = ["evaluation_body"]

#: Metrics shown in the summary table, in this order, when the evaluation has them.
_SUMMARY_METRICS = (("dice", "Dice"), ("iou", "IoU"), ("hd95_mm", "HD95 mm"), ("assd_mm", "ASSD mm"),
                    ("surface_dice", "surface Dice"), ("precision", "precision"), ("recall", "sensitivity"),
                    ("specificity", "specificity"), ("rel_vol_diff", "rel. vol. diff."),
                    ("vol_diff_ml", "vol. diff. ml"), ("lesion_dice", "lesion-wise Dice"),
                    ("lesion_hd95_mm", "lesion-wise HD95 mm"))


def evaluation_body(folder: Path, label_names: Mapping[int, str]) -> str:
    summary_path = folder / JSON_NAME
    if not summary_path.exists():
        raise InputError(folder, f"no {JSON_NAME} here (write one with voxseg evaluate)")
    document = _read_json(summary_path)
    summary = document["summary"]
    rows = _read_rows(folder / CSV_NAME)
    structures = list(document.get("structures") or summary["metrics"])
    parts = [f'<p>{summary["n_cases"]} case(s); predictions {html.escape(document.get("pred_dir", "?"))}, '
             f'references {html.escape(document.get("ref_dir", "?"))}.</p>\n', _summary_table(summary, structures)]
    parts.append(_by_split(summary, structures))
    if rows:
        parts.append(_picture(figure_png(dice_per_case_figure(rows, structures)), "Dice per case"))
    if not label_names:  # structures of one label each name that label (the classes of an evaluation)
        label_names = {int(v[0]): name for name, v in document.get("structures", {}).items() if len(v) == 1}
    parts.append(_ranked_cases(document, label_names))
    if rows:
        parts.append("<h3>Every case (worst first)</h3>\n" + _case_table(summary, rows, structures))
    confusion = summary.get("confusion_matrix")
    if confusion:
        labels = confusion["labels"]
        matrix = [[f"reference {v}", *counts] for v, counts in zip(labels, confusion["matrix"])]
        parts.append("<h3>Confusion matrix (voxels, all cases)</h3>\n"
                     + _table(matrix, ("", *[f"predicted {v}" for v in labels])))
    policy = document.get("empty_mask_policy")
    if policy:
        parts.append(f'<p class="note">Empty masks: {html.escape(json.dumps(policy) if not isinstance(policy, str) else policy)}</p>\n')
    return "".join(parts)


def _by_split(summary: Mapping, structures: Sequence[str]) -> str:
    """With ``evaluate --run``: the held-out cases' summary table and the trained ones', apart; else nothing."""
    by_split = summary.get("by_split") or {}
    parts = []
    for name, title in (("held_out", "Held-out cases (validation and never seen)"),
                        ("training", "Cases the run trained on (optimistic)")):
        if name in by_split:
            parts.append(f"<h3>{title}: {by_split[name]['n_cases']}</h3>\n"
                         + _summary_table(by_split[name], structures))
    return "".join(parts)


def _read_rows(csv_path: Path) -> list[dict[str, object]]:
    if not csv_path.exists():
        return []
    with csv_path.open(newline="") as fh:
        rows: list[dict[str, object]] = []
        for raw in csv.DictReader(fh):
            row: dict[str, object] = {}
            for key, value in raw.items():
                try:
                    row[key] = float(value) if key not in ("case_id", "structure", "split") else value
                except (TypeError, ValueError):
                    row[key] = value
            rows.append(row)
    return rows


def _summary_table(summary: Mapping, structures: Sequence[str]) -> str:
    """Rows: metrics; columns: structures; cells: mean ± std (median) over cases."""
    metrics = summary["metrics"]
    table = []
    for key, name in _SUMMARY_METRICS:
        stats = [metrics.get(s, {}).get(key) or {} for s in structures]
        if not any(stat.get("mean") is not None for stat in stats):
            continue
        table.append([name] + [None if stat.get("mean") is None else
                               f"{_text(stat['mean'])} ± {_text(stat['std'])} ({_text(stat['median'])})"
                               for stat in stats])
    empty = summary.get("empty_counts", {})
    table.append(["empty in reference / prediction"] + [f"{empty.get(s, {}).get('ref_empty', 0)} / "
                                                         f"{empty.get(s, {}).get('pred_empty', 0)}" for s in structures])
    return _table(table, ("", *structures)) + \
        '<p class="note">mean ± standard deviation (median) over cases.</p>\n'


def _case_table(summary: Mapping, rows: Sequence[Mapping[str, object]], structures: Sequence[str]) -> str:
    mean_dice = summary.get("cases", {}).get("mean_dice", {})
    by_case: dict[str, dict[str, Mapping]] = {}
    for row in rows:
        by_case.setdefault(str(row["case_id"]), {})[str(row["structure"])] = row
    order = sorted(by_case, key=lambda c: (mean_dice.get(c, math.inf), c))
    table, classes = [], []
    for case_id in order:
        cells: list[object] = [case_id, mean_dice.get(case_id)]
        css = ["", ""]
        for s in structures:
            row = by_case[case_id].get(s, {})
            dice, hd95 = row.get("dice"), row.get("hd95_mm")
            cells += [dice if isinstance(dice, float) else None, hd95 if isinstance(hd95, float) else None]
            css += ["bad" if isinstance(dice, float) and dice < 0.5 else "", ""]
        table.append(cells)
        classes.append(css)
    header = ["case", "mean Dice"] + [f"{s} {m}" for s in structures for m in ("Dice", "HD95 mm")]
    return _table(table, header, classes)


def _ranked_cases(document: Mapping, label_names: Mapping[int, str]) -> str:
    cases = document["summary"].get("cases", {})
    chosen = [(rank, cases.get(rank)) for rank in ("best", "median", "worst") if cases.get(rank)]
    if not chosen:
        return ""
    try:
        preds = find_label_files(document["pred_dir"], "prediction")
        refs = find_label_files(document["ref_dir"], "reference")
    except (InputError, KeyError):
        return '<p class="note">The predictions or references have moved since the evaluation: no pictures.</p>\n'
    parts = ["<h3>Best, median and worst case by mean Dice</h3>\n"]
    shown: set[str] = set()
    datasets: dict[Path, list | None] = {}
    for rank, case_id in chosen:
        if case_id in shown or case_id not in preds or case_id not in refs:
            continue
        shown.add(case_id)
        try:
            prediction, _ = read_volume(preds[case_id], dtype=np.int32)
            reference, geometry = read_volume(refs[case_id], dtype=np.int32)
        except InputError as exc:
            parts.append(f'<p class="note">{html.escape(str(exc))}</p>\n')
            continue
        image, where = _image_beside(refs[case_id], reference.shape, datasets)
        dice = cases.get("mean_dice", {}).get(case_id)
        title = f"{rank}: {case_id} (mean Dice {_text(dice)})"
        parts.append(_picture(figure_png(overlay_figure(image, reference, prediction, title, label_names,
                                                              geometry.spacing)), title))
        parts.append(f'<p class="note">{html.escape(where)}</p>\n')
    return "".join(parts)


def _image_beside(ref_path: Path, shape: tuple[int, ...],
                  datasets: dict[Path, list | None]) -> tuple[np.ndarray, str]:
    """The first channel of the case whose label is ``ref_path`` (following links), looked for in the
    dataset folders at most two levels above it; a blank volume when there is none. ``datasets`` keeps the
    folders already listed (their cases, or None when not a dataset), so each is listed once per page."""
    target = ref_path.resolve()
    for root in list(target.parents)[:3]:
        if root not in datasets:
            try:
                datasets[root] = load_dataset(root).cases
            except (InputError, OSError, ValueError):
                datasets[root] = None
        cases = datasets[root]
        if cases is None:
            continue
        for case in cases:
            same = case.label_path is not None and Path(case.label_path).resolve() == target
            if same and case.image_paths:
                try:
                    image, _ = read_volume(case.image_paths[0])
                except InputError:
                    break
                if image.shape == tuple(shape):
                    return image, f"background: {case.image_paths[0]}"
    return np.zeros(shape, np.float32), f"no image found beside {ref_path}: labels drawn on a blank background"
