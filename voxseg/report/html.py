"""One self-contained HTML page per run (and per evaluation): what was trained on what, how training went,
how the predictions score, and what the best, median and worst cases look like.

The pictures are embedded (base64 PNG), so the page can be mailed or archived on its own. The page is built
from the files a run or an evaluation leaves behind (``plan.json``, ``split.json``, ``fingerprint.json``,
``log.csv``, ``postprocessing.json``, ``metrics_summary.json``, ``metrics_per_case.csv``), so it can be
written again at any time, also while a run is still training.
"""
from __future__ import annotations

import datetime
import html
from collections.abc import Sequence
from pathlib import Path

from voxseg.io.files import write_atomic
from voxseg.report.evaluation_sections import evaluation_body
from voxseg.report.run_sections import run_sections

__all__ = ["REPORT_NAME", "write_report"]

REPORT_NAME = "report.html"

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
        of_run, names = run_sections(Path(run_dir))
        sections += of_run
    for k, folder in enumerate(Path(f) for f in evaluation_dirs):
        heading = "Evaluation" if len(evaluation_dirs) == 1 else f"Evaluation: {folder.name}"
        sections.append((f"evaluation{k}", heading, evaluation_body(folder, names)))
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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("voxseg")
    except PackageNotFoundError:
        return "(not installed)"
