"""Small HTML pieces shared by the report's sections: tables, numbers as text, embedded PNG pictures."""
from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path

from voxseg.errors import InputError


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"unreadable JSON ({type(exc).__name__}: {exc})") from None


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
