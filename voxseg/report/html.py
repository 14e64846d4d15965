"""One self-contained HTML page per run (and per evaluation): what was trained on what, how training went,
how the predictions score, and what the best, median and worst cases look like.

The pictures are embedded (base64 PNG), so the page can be mailed or archived on its own. The page is built
from the files a run or an evaluation leaves behind (``plan.json``, ``split.json``, ``fingerprint.json``,
``log.csv``, ``postprocessing.json``, ``metrics_summary.json``, ``metrics_per_case.csv``), so it can be
written again at any time, also while a run is still training.
"""
from __future__ import annotations

import base64
import csv
import datetime
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from voxseg.errors import InputError
from voxseg.io import load_dataset, read_volume
from voxseg.metrics.evaluate import CSV_NAME, JSON_NAME, find_label_files
from voxseg.config import RunPlan
from voxseg.io.files import write_atomic
from voxseg.data import FINGERPRINT_NAME
from voxseg.report.curves import dice_per_case_figure, figure_png, learning_curves_figure, overlay_figure, read_log

__all__ = ["REPORT_NAME", "write_report"]

REPORT_NAME = "report.html"

#: Metrics shown in the summary table, in this order, when the evaluation has them.
_SUMMARY_METRICS = (("dice", "Dice"), ("iou", "IoU"), ("hd95_mm", "HD95 mm"), ("assd_mm", "ASSD mm"),
                    ("surface_dice", "surface Dice"), ("precision", "precision"), ("recall", "sensitivity"),
                    ("specificity", "specificity"), ("rel_vol_diff", "rel. vol. diff."),
                    ("vol_diff_ml", "vol. diff. ml"), ("lesion_dice", "lesion-wise Dice"),
                    ("lesion_hd95_mm", "lesion-wise HD95 mm"))

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0; } td, th { border: 1px solid #ddd; padding: .25em .6em; }
th { background: #f4f4f4; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; } .note { color: #666; } .bad { background: #fde2e2; } .good { background: #e2f5e2; }
nav a { margin-right: 1em; }
"""


def write_report(path: str | Path, run_dir: str | Path | None = None,
                 evaluation_dirs: Sequence[str | Path] = (), title: str | None = None) -> Path:
    """Write one HTML page about a run and/or evaluations of its predictions.

    Args:
        path: the HTML file to write (atomically: a temporary name, then rename).
        run_dir: a run folder (``plan.json``; k-fold runs show each ``fold_*``); None for an evaluation alone.
        evaluation_dirs: folders holding ``metrics_summary.json`` and ``metrics_per_case.csv`` (what
            ``voxseg evaluate`` writes); the best, median and worst case by mean Dice are drawn over their
            image when the image can be found beside the reference label (nnU-Net, paired or per-subject
            layouts), else over a blank background.
        title: page title (default: the run folder's or the first evaluation's name).

    Returns:
        ``path``.

    Raises:
        InputError: ``run_dir`` has no ``plan.json``, or an evaluation folder has no ``metrics_summary.json``.
    """
    path = Path(path)
    sections: list[tuple[str, str, str]] = []  # (anchor, heading, body)
    names: dict[int, str] = {}
    if run_dir is not None:
        run_sections, names = _run_sections(Path(run_dir))
        sections += run_sections
    for k, folder in enumerate(Path(f) for f in evaluation_dirs):
        heading = "Evaluation" if len(evaluation_dirs) == 1 else f"Evaluation: {folder.name}"
        sections.append((f"evaluation{k}", heading, _evaluation_body(folder, names)))
    if title is None:
        title = Path(run_dir).resolve().name if run_dir is not None else \
            (Path(evaluation_dirs[0]).resolve().name if evaluation_dirs else "voxseg")
    nav = "".join(f'<a href="#{a}">{html.escape(h)}</a>' for a, h, _ in sections)
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    body = "".join(f'<h2 id="{a}">{html.escape(h)}</h2>\n{b}\n' for a, h, b in sections)
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>voxseg: {html.escape(title)}"
            f"</title><style>{_STYLE}</style></head><body>\n<h1>voxseg report: {html.escape(title)}</h1>\n"
            f"<p class=\"note\">written {stamp} by voxseg {_version()}</p><nav>{nav}</nav>\n{body}</body></html>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda f: f.write(page.encode("utf-8")))


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"unreadable JSON ({type(exc).__name__}: {exc})") from None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("voxseg")
    except PackageNotFoundError:
        return "(not installed)"


# ---------------------------------------------------------------------------------------------- the run

def _run_sections(run_dir: Path) -> tuple[list[tuple[str, str, str]], dict[int, str]]:
    """The run's sections, and its label names (value -> name) for the pictures' legends."""
    plan_path = run_dir / "plan.json"
    if not plan_path.exists():
        raise InputError(run_dir, "not a voxseg run folder (no plan.json)")
    plan = RunPlan.load(plan_path)  # an unreadable one is an InputError naming it
    sections = [("plan", "Plan", _plan_body(plan, run_dir)), ("data", "Data", _data_body(run_dir))]
    models = sorted(run_dir.glob("fold_*/log.csv")) or [run_dir / "log.csv"]
    sections.append(("training", "Training", "".join(_training_body(log.parent, len(models) > 1) for log in models)))
    postprocessing = run_dir / "postprocessing.json"
    if postprocessing.exists():
        sections.append(("postprocessing", "Post-processing", _postprocessing_body(postprocessing)))
    names = {int(v): n for v, n in plan.label_names.items() if int(v) != 0}
    if (run_dir / "oof" / JSON_NAME).exists():
        sections.append(("oof", "Out-of-fold evaluation", _evaluation_body(run_dir / "oof", names)))
    return sections, names


def _table(rows: Sequence[Sequence[object]], header: Sequence[str] | None = None, classes: Sequence[Sequence[str]] = ()) -> str:
    """An HTML table; numbers are right-aligned; ``classes[i][j]`` styles cell (i, j)."""
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for i, row in enumerate(rows):
        cells = []
        for j, value in enumerate(row):
            css = [classes[i][j]] if i < len(classes) and j < len(classes[i]) and classes[i][j] else []
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                css.append("num")
            attr = f' class="{" ".join(css)}"' if css else ""
            tag = "th" if j == 0 and header is None else "td"
            cells.append(f"<{tag}{attr}>{html.escape(_text(value))}</{tag}>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</table>\n"


def _text(value: object) -> str:
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.4g}" if abs(value) >= 100 else f"{value:.3f}"
    if value is None:
        return "–"
    return str(value)


def _picture(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">\n'


def _parameters(plan: RunPlan) -> int | None:
    from voxseg.nets import build_model
    from voxseg.nets import count_parameters

    try:
        return count_parameters(build_model(plan))
    except (ValueError, KeyError, TypeError, RuntimeError):  # a plan of another version: the page still helps
        return None


def _plan_body(plan: RunPlan, run_dir: Path) -> str:
    pre, net, train = plan.preprocess, plan.network, plan.train
    labels = ", ".join(f"{v} {plan.label_names.get(str(v), '')}".strip() for v in plan.label_values)
    scheme = plan.label_scheme
    if plan.scheme.is_region_based:
        scheme += " (sigmoid: " + ", ".join(f"{name} = {{{', '.join(map(str, values))}}}"
                                            for name, values in plan.scheme.regions.items()) + ")"
    steps = [f"voxel order {pre.orientation} (every scan flipped / permuted to it)" if pre.orientation else
             "each file's own voxel order",
             "crop to the nonzero box" if pre.crop_to_nonzero else "no crop",
             f"normalisation {pre.normalization}" + (
                 f" (clip to {pre.ct_window[0]:g}..{pre.ct_window[1]:g} HU" + (
                     f", minus {pre.ct_mean:g}, over {pre.ct_std:g})" if pre.ct_mean is not None and pre.ct_std
                     else ")") if pre.normalization == "ct" and pre.ct_window else ""),
             f"resampled to {' x '.join(f'{s:g}' for s in pre.target_spacing)} mm" if pre.target_spacing else
             "no resampling"]
    steps += ["N4 bias-field correction"] if pre.n4 else []
    steps += [f"{pre.denoise} anisotropic diffusion"] if pre.denoise else []
    augment = [name for name, values in plan.augment.to_dict().items() if isinstance(values, dict) and values.get("p")]
    n_params = _parameters(plan)
    budget = f"{train.epochs} epochs x {train.iterations_per_epoch} iterations" + (
        f", at most {train.time_budget_minutes:g} minutes" if train.time_budget_minutes else "")
    rows = [
        ("run folder", str(run_dir.resolve())),
        ("dataset", plan.dataset or "–"),
        ("channels", ", ".join(plan.channel_names) + (f" (trained on {', '.join(train.channels)})"
                                                       if train.channels else "")),
        ("labels", labels),
        ("label scheme", scheme),
        ("preprocessing", ", ".join(steps)),
        ("network", f"{net.name}, {net.spatial_dims}-D, {json.dumps(net.kwargs)}"
                    + (f", {n_params / 1e6:.2f} M parameters" if n_params else "")),
        ("patch, batch", f"{' x '.join(map(str, train.patch_size))} voxels ({train.mode}), batch {train.batch_size}"),
        ("loss", train.loss + (f" {json.dumps(train.loss_kwargs)}" if train.loss_kwargs else "")),
        ("optimiser", f"{train.optimizer}, learning rate {_text(train.lr)}, schedule {train.schedule}"),
        ("budget", budget),
        ("augmentation", ", ".join(augment) or "none"),
        ("mixed precision", train.amp),
        ("seed", train.seed),
        ("sliding window", f"overlap {plan.inference.overlap:g}, "
                           f"{'Gaussian' if plan.inference.gaussian else 'uniform'} weighting"),
    ]
    return _table(rows) + '<p class="note">Everything is in plan.json beside the checkpoints.</p>\n'


def _data_body(run_dir: Path) -> str:
    parts = []
    for name in ("split.json", "splits.json"):
        if (run_dir / name).exists():
            split = _read_json(run_dir / name)
            folds = split if isinstance(split, list) else [split]
            rows = [(f"fold {k}" if len(folds) > 1 else "split", len(s.get("train", [])), len(s.get("val", [])),
                     ", ".join(s.get("val", [])[:12]) + (" ..." if len(s.get("val", [])) > 12 else ""))
                    for k, s in enumerate(folds)]
            parts.append(_table(rows, ("", "training cases", "validation cases", "validation case ids")))
    fingerprint = run_dir / FINGERPRINT_NAME
    if fingerprint.exists():
        fp = _read_json(fingerprint)

        def _axes(values, unit):
            return " x ".join(f"{v:g}" for v in values) + f" {unit}" if values else "–"

        rows = [("cases", fp.get("n_cases")),
                ("spacing (z, y, x) median", _axes(fp.get("spacing_median"), "mm")),
                ("spacing min / max", f"{_axes(fp.get('spacing_min'), 'mm')} / {_axes(fp.get('spacing_max'), 'mm')}"),
                ("shape median", _axes(fp.get("shape_median"), "voxels")),
                ("shape min / max", f"{_axes(fp.get('shape_min'), 'voxels')} / {_axes(fp.get('shape_max'), 'voxels')}")]
        parts.append(_table(rows))
    return "".join(parts) or '<p class="note">No split.json or fingerprint.json in the run folder.</p>\n'


def _training_body(model_dir: Path, show_name: bool) -> str:
    heading = f"<h3>{html.escape(model_dir.name)}</h3>\n" if show_name else ""
    rows = read_log(model_dir / "log.csv")
    if not rows:
        return heading + '<p class="note">No epoch finished yet (log.csv is empty or missing).</p>\n'
    last = rows[-1]
    facts: list[tuple[str, object]] = [("epochs", int(last["epoch"])), ("iterations", int(last["iterations"])),
                                       ("minutes", float(last["minutes"])),
                                       ("last training loss", float(last["train_loss"]))]
    validated = [r for r in rows if r.get("val_dice_mean") not in (None, "")]
    if validated:
        best = max(validated, key=lambda r: float(r["val_dice_mean"]))
        facts += [("best validation Dice (mean)", float(best["val_dice_mean"])), ("at epoch", int(best["epoch"])),
                  ("last validation Dice (mean)", float(validated[-1]["val_dice_mean"]))]
        facts += [(f"best-epoch validation Dice {k.removeprefix('val_dice_')}", float(best[k]))
                  for k in best if k.startswith("val_dice_") and k != "val_dice_mean" and best[k] not in (None, "")]
    else:
        facts.append(("validation", "none (no validation cases): the last weights are used"))
    checkpoints = [f"{p.name} ({p.stat().st_size / 2**20:.1f} MiB)" for p in sorted(model_dir.glob("checkpoint_*.pt"))]
    facts.append(("checkpoints", ", ".join(checkpoints) or "none yet"))
    return heading + _table(facts) + _picture(figure_png(learning_curves_figure(rows)), "learning curves")


def _postprocessing_body(path: Path) -> str:
    data = _read_json(path)
    rows = [(r.get("description", ""), r.get("mean_before"), r.get("mean_after"), "kept" if r.get("kept") else "dropped")
            for r in data.get("selection", [])]
    text = _table(rows, ("rule", "mean Dice before", "after", "")) if rows else ""
    return text + f'<p class="note">{html.escape(str(data.get("criterion", "")))}</p>\n'


# --------------------------------------------------------------------------------------- an evaluation

def _evaluation_body(folder: Path, label_names: Mapping[int, str]) -> str:
    summary_path = folder / JSON_NAME
    if not summary_path.exists():
        raise InputError(folder, f"no {JSON_NAME} here (write one with voxseg evaluate)")
    document = _read_json(summary_path)
    summary = document["summary"]
    rows = _read_rows(folder / CSV_NAME)
    structures = list(document.get("structures") or summary["metrics"])
    parts = [f'<p>{summary["n_cases"]} case(s); predictions {html.escape(document.get("pred_dir", "?"))}, '
             f'references {html.escape(document.get("ref_dir", "?"))}.</p>\n', _summary_table(summary, structures)]
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


def _read_rows(csv_path: Path) -> list[dict[str, object]]:
    if not csv_path.exists():
        return []
    with csv_path.open(newline="") as fh:
        rows: list[dict[str, object]] = []
        for raw in csv.DictReader(fh):
            row: dict[str, object] = {}
            for key, value in raw.items():
                try:
                    row[key] = float(value) if key not in ("case_id", "structure") else value
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
            reference, _ = read_volume(refs[case_id], dtype=np.int32)
        except InputError as exc:
            parts.append(f'<p class="note">{html.escape(str(exc))}</p>\n')
            continue
        image, where = _image_beside(refs[case_id], reference.shape, datasets)
        dice = cases.get("mean_dice", {}).get(case_id)
        title = f"{rank}: {case_id} (mean Dice {_text(dice)})"
        parts.append(_picture(figure_png(overlay_figure(image, reference, prediction, title, label_names)), title))
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
