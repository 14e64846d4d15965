"""Summaries of per-case metric rows across a data set, and a terminal table of them.

A row is one case x structure: ``{"case_id": str, "structure": str, <metric>: float, ...,
"ref_empty": bool, "pred_empty": bool}`` (what :func:`voxseg.metrics.evaluate_folders` returns).
Statistics use the finite values only (NaN, e.g. ``rel_vol_diff`` with an empty reference, is left
out), and ``n`` says how many there were.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["summarise", "format_summary", "confusion_summary"]

_KEY_FIELDS = ("case_id", "structure")
_FLAGS = ("ref_empty", "pred_empty")


def _stats(values: Sequence[float]) -> dict[str, float | int | None]:
    """mean, sample std (ddof=1; 0 for one value), median, quartiles and n of the finite values."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "std": None, "median": None, "q25": None, "q75": None, "n": 0}
    q25, median, q75 = np.percentile(arr, [25, 50, 75])
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "median": float(median),
        "q25": float(q25),
        "q75": float(q75),
        "n": int(arr.size),
    }


def _is_metric(key: str, value: object) -> bool:
    return key not in _KEY_FIELDS and not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.number))


def summarise(rows: Sequence[Mapping[str, object]]) -> dict:
    """Aggregate per-case rows per structure and metric, and rank the cases.

    Args:
        rows: one mapping per case x structure with ``case_id``, ``structure``, numeric metrics and
            optionally the ``ref_empty``/``pred_empty`` flags.

    Returns:
        ``{"n_cases": int,
        "metrics": {structure: {metric: {"mean", "std", "median", "q25", "q75", "n"}}},
        "empty_counts": {structure: {"ref_empty": int, "pred_empty": int}},
        "cases": {"best": id, "median": id, "worst": id, "mean_dice": {id: float}}}``.
        Cases are ranked by their mean Dice over structures (ties broken by case id); the median
        case is the lower median. ``cases`` values are ``None`` when no row has a Dice.
        Statistics are ``None`` (and ``n`` 0) when a metric has no finite value.
    """
    structures: dict[str, list[Mapping[str, object]]] = {}
    case_ids: list[str] = []
    for row in rows:
        missing = [k for k in _KEY_FIELDS if k not in row]
        if missing:
            raise ValueError(f"metric row without {missing}: {dict(row)}")
        structures.setdefault(str(row["structure"]), []).append(row)
        if str(row["case_id"]) not in case_ids:
            case_ids.append(str(row["case_id"]))

    metrics: dict[str, dict[str, dict]] = {}
    empty_counts: dict[str, dict[str, int]] = {}
    for name, srows in structures.items():
        keys: list[str] = []
        for row in srows:
            keys += [k for k, v in row.items() if _is_metric(k, v) and k not in keys]
        metrics[name] = {k: _stats([float(r[k]) for r in srows if k in r]) for k in keys}
        empty_counts[name] = {flag: int(sum(bool(r.get(flag, False)) for r in srows)) for flag in _FLAGS}

    mean_dice: dict[str, float] = {}
    for case_id in case_ids:
        dices = [float(r["dice"]) for r in rows if str(r["case_id"]) == case_id and "dice" in r]
        dices = [d for d in dices if math.isfinite(d)]
        if dices:
            mean_dice[case_id] = float(np.mean(dices))
    ranked = sorted(mean_dice, key=lambda c: (mean_dice[c], c))
    cases = {
        "best": ranked[-1] if ranked else None,
        "median": ranked[(len(ranked) - 1) // 2] if ranked else None,
        "worst": ranked[0] if ranked else None,
        "mean_dice": mean_dice,
    }
    return {"n_cases": len(case_ids), "metrics": metrics, "empty_counts": empty_counts, "cases": cases}


def confusion_summary(matrix: np.ndarray, labels: Sequence[int]) -> dict:
    """A JSON-able description of a (summed) confusion matrix.

    Args:
        matrix: ``(L, L)`` voxel counts, rows = reference label, columns = predicted label
            (:func:`voxseg.metrics.case.confusion_matrix`, summed over cases).
        labels: the L label values of the rows and columns.

    Returns:
        ``{"labels": [...], "rows": "reference", "columns": "prediction", "matrix": [[int]],
        "recall": {label: float | None}, "precision": {label: float | None}}``; recall is the
        diagonal over the row sum, precision over the column sum (``None`` when that sum is 0).
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    labels = [int(v) for v in labels]
    if matrix.shape != (len(labels), len(labels)):
        raise ValueError(f"matrix shape {matrix.shape} does not match {len(labels)} labels")
    diag, rows, cols = np.diag(matrix), matrix.sum(axis=1), matrix.sum(axis=0)
    return {
        "labels": labels,
        "rows": "reference",
        "columns": "prediction",
        "matrix": matrix.tolist(),
        "recall": {str(v): (float(diag[i] / rows[i]) if rows[i] else None) for i, v in enumerate(labels)},
        "precision": {str(v): (float(diag[i] / cols[i]) if cols[i] else None) for i, v in enumerate(labels)},
    }


def _fmt(stat: Mapping[str, object], metric: str) -> str:
    if stat.get("mean") is None:
        return "-"
    digits = 2 if metric.endswith(("_mm", "_ml")) else 3
    return f"{stat['mean']:.{digits}f}±{stat['std']:.{digits}f}"


def format_summary(
    summary: Mapping[str, object],
    metrics: Sequence[str] = ("dice", "hd95_mm", "assd_mm", "surface_dice", "rel_vol_diff"),
) -> str:
    """A fixed-width table (structure x metric, mean±std) for the terminal.

    Args:
        summary: the output of :func:`summarise`.
        metrics: columns to show, in order; absent metrics print ``-``.

    Returns:
        Multi-line text without a trailing newline: a header line, one line per structure, then the
        best/median/worst cases by mean Dice.
    """
    table = summary["metrics"]
    header = ["structure", "n", *metrics]
    lines = []
    for name, stats in table.items():
        n = max((s["n"] for s in stats.values()), default=0)
        lines.append([name, str(n), *(_fmt(stats.get(m, {}), m) for m in metrics)])
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]

    def render(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))]).rstrip()

    out = [render(header), render(["-" * w for w in widths]), *(render(r) for r in lines)]
    cases = summary.get("cases") or {}
    if cases.get("best") is not None:
        md = cases["mean_dice"]
        out.append(
            f"cases by mean Dice ({summary.get('n_cases', len(md))}): best {cases['best']} ({md[cases['best']]:.3f}), "
            f"median {cases['median']} ({md[cases['median']]:.3f}), worst {cases['worst']} ({md[cases['worst']]:.3f})"
        )
    return "\n".join(out)
