"""Knobs: configuration fields that describe themselves, so that a setting is defined once.

A knob is a dataclass field made with :func:`knob`: its default and type are the field's, and its metadata
(a :class:`Knob`) says what the command line and the options reference need: help text, the purpose group it
is listed under, the allowed range, the allowed choices (literal values, or the name of a registry that
``voxseg.cli`` resolves, since the registries live in later packages) and how a value is written as text
(``64x64x64``, ``k=v,k=v``; the parsers are in :data:`PARSERS`). Fields without knob metadata are settings
without a command-line flag (set in ``plan.json`` or through the API).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from voxseg.errors import InputError

__all__ = ["GROUPS", "Knob", "PARSERS", "interval", "knob", "knob_fields", "parse_key_values", "parse_sizes",
           "split_top_level"]

GROUPS = ("data", "network", "loss", "optimisation", "augmentation", "budget and hardware", "output")
"""The purposes options are grouped by in ``voxseg train --help`` and ``docs/options.md``, in that order."""


@dataclass(frozen=True)
class Knob:
    """What a user-facing setting shows of itself.

    Attributes:
        help: one line saying what it does, with its unit; papers cited by authors and year.
        group: one of :data:`GROUPS`.
        flag: the command-line flag; None: ``--`` and the field name with dashes.
        range: allowed numbers in interval notation, e.g. ``"[1, inf)"``, ``"(0, inf)"``, ``"[0, 1)"``.
        choices: the allowed values, or the name of a registry (``"optimizers"``, ``"schedules"``,
            ``"networks"``, ``"losses"``, ``"normalizations"``, ``"denoisers"``, ``"augmentations"``,
            ``"label_schemes"``) that ``voxseg.cli`` reads when it builds the command.
        parse: the name of the parser of a value written as text (a key of :data:`PARSERS`, or ``"loss_args"``,
            which ``voxseg.cli`` resolves).
        shown: the default as the reference shows it, where the field's default (None) means "planned".
    """

    help: str
    group: str
    flag: str | None = None
    range: str | None = None
    choices: str | tuple | None = None
    parse: str | None = None
    shown: str | None = None

    def __post_init__(self):
        if self.group not in GROUPS:
            raise ValueError(f"knob group {self.group!r} is not one of {GROUPS}")
        if self.range is not None:
            interval(self.range)


def knob(default: Any, *, help: str, group: str, flag: str | None = None, range: str | None = None,
         choices: str | tuple | None = None, parse: str | None = None, shown: str | None = None) -> Any:
    """A dataclass field with ``default`` (a list or dict default is copied for every instance) and a
    :class:`Knob` as its metadata, e.g. ``lr: float | None = knob(None, help=..., group="optimisation",
    range="(0, inf)")``."""
    metadata = {"knob": Knob(help, group, flag, range, choices, parse, shown)}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def knob_fields(cls: type) -> list[tuple[dataclasses.Field, Knob]]:
    """The fields of dataclass ``cls`` that are knobs, in definition order, with their :class:`Knob`."""
    return [(f, f.metadata["knob"]) for f in dataclasses.fields(cls) if "knob" in f.metadata]


def interval(text: str) -> tuple[float, float, bool, bool]:
    """``"[0, 1)"`` -> ``(0.0, 1.0, False, True)``: low, high, whether each end is open (``inf`` is open)."""
    text = text.strip()
    if text[:1] not in "[(" or text[-1:] not in "])" or text.count(",") != 1:
        raise ValueError(f"range {text!r} is not an interval such as [0, 1) or (0, inf)")
    lo, hi = (float(v) for v in text[1:-1].split(","))
    return lo, hi, text[0] == "(" or math.isinf(lo), text[-1] == ")" or math.isinf(hi)


def split_top_level(text: str) -> list[str]:
    """``text`` split at the commas outside brackets (``[]`` and ``()``), items stripped, empty ones dropped: the
    ``key=value,...`` option strings of the command line, whose values may be lists."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def parse_key_values(text: str | None) -> dict:
    """``"alpha=0.3,beta=0.7,name=x"`` -> ``{"alpha": 0.3, "beta": 0.7, "name": "x"}``; a value is JSON when it
    parses as JSON (numbers, lists such as ``"strides=[[1,2,2],[2,2,2]]"``, whose commas do not separate items),
    else a string.

    Raises:
        ValueError: an item without ``=``, or a malformed list.
    """
    out: dict = {}
    for item in split_top_level(text or ""):
        if "=" not in item:
            raise ValueError(f"expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            if value.strip()[:1] in ("[", "("):
                raise ValueError(f"{key.strip()}={value.strip()} is not a list; write one as JSON, e.g. "
                                 "[[1,2,2],[2,2,2]]") from None
            out[key.strip()] = value.strip()
    return out


def _numbers(text: str, kind: type) -> list:
    try:
        return [kind(v) for v in text.lower().replace("x", ",").split(",") if v.strip()]
    except ValueError:
        return []


def parse_sizes(text: str | None) -> list[int] | None:
    """``"64x64x64"`` or ``"64,64,64"`` -> ``[64, 64, 64]`` (positive integers); empty -> None."""
    if not text:
        return None
    values = _numbers(text, int)
    if not values or any(v < 1 for v in values):
        raise ValueError(f"expected positive integers such as 64x64x64, got {text!r}")
    return values


def _three(values: list | tuple | None, text: str):
    if values is not None and len(values) != 3:
        raise ValueError(f"expected 3 values (Z, Y, X), got {text!r}")
    return values


def _parse_cube(text: str | None) -> list[int] | None:
    """Three positive sizes, ``Z x Y x X`` voxels."""
    return _three(parse_sizes(text), text)


def _parse_spacing(text: str | None) -> str | tuple[float, float, float]:
    """``"none"``, ``"auto"``, or ``"Z,Y,X"`` (mm, positive) -> a tuple of three floats."""
    if str(text).lower() in ("none", "auto", ""):
        return str(text).lower() or "none"
    values = tuple(_numbers(text, float))
    if not values or any(not v > 0 for v in values):
        raise ValueError(f"expected positive numbers such as 1,1,1.5, got {text!r}")
    return _three(values, text)


def _parse_window(text: str | None) -> tuple[float, float] | None:
    """``"-100,200"`` -> ``(-100.0, 200.0)`` (two numbers, low < high)."""
    if not text:
        return None
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if len(values) != 2 or not values[0] < values[1]:
        raise ValueError(f"expected LO,HI with LO < HI, such as -100,200, got {text!r}")
    return values


def _parse_names(text: str | None) -> list[str] | None:
    """``"t1ce,t2,flair"`` -> ``["t1ce", "t2", "flair"]``; empty -> None."""
    return [c for c in text.split(",") if c] or None if text else None


def _parse_label_names(text: str | None) -> list[str] | dict[str, str] | None:
    """Names of label values: ``"CSF,GM,WM"`` (the foreground values in increasing order) -> a list; a file ->
    its JSON object ``{"1": "CSF", ...}`` (value -> name) as a dict, or its lines (one name per line, blank
    lines skipped) as a list. Empty -> None.

    Raises:
        InputError: a file named ``*.json`` or ``*.txt`` that does not exist, or a JSON file that is not an
            object of label values (integers) to names.
    """
    if not text:
        return None
    path = Path(text)
    if path.suffix.lower() in (".json", ".txt") and not path.is_file():
        raise InputError(path, "labels file not found")
    if not path.is_file():
        return [name.strip() for name in text.split(",") if name.strip()] or None
    if path.suffix.lower() == ".json":
        try:
            document = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(path, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(document, dict) or not all(str(k).strip().isdigit() for k in document):
            raise InputError(path, 'must hold an object of label values to names, e.g. {"1": "CSF", "2": "GM"}')
        return {str(int(k)): str(v) for k, v in document.items()}
    return [line.strip() for line in path.read_text().splitlines() if line.strip()] or None


def _parse_orientation(text: str) -> str:
    """``"auto"``, ``"none"`` or three axis codes such as ``"RAS"`` (upper-cased)."""
    from voxseg.data.orientation import check_orientation_code

    if text.lower() in ("auto", "none"):
        return text.lower()
    try:
        return check_orientation_code(text)
    except ValueError as exc:
        raise ValueError(f"{exc}; or auto, none") from None


def _parse_cases(text: str | None) -> list[str] | None:
    """Case ids from ``a,b,c`` or from a ``flagged_cases.json`` written by ``--flag-hard-cases``."""
    if not text:
        return None
    if text.endswith(".json"):
        path = Path(text)
        if not path.exists():
            raise InputError(path, "file not found")
        document = json.loads(path.read_text())
        flagged = document.get("flagged") if isinstance(document, dict) else None
        if not isinstance(flagged, list):
            raise ValueError(f"{path}: not a flagged_cases.json (no 'flagged' list of case ids)")
        return [str(c) for c in flagged]
    return [c for c in text.split(",") if c]


PARSERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "key_values": (parse_key_values, "K=V,..."),
    "sizes": (parse_sizes, "ZxYxX"),
    "cube": (_parse_cube, "ZxYxX"),
    "spacing": (_parse_spacing, "none|auto|Z,Y,X"),
    "window": (_parse_window, "LO,HI"),
    "names": (_parse_names, "A,B,..."),
    "orientation": (_parse_orientation, "auto|none|RAS|..."),
    "cases": (_parse_cases, "IDS|FILE.json"),
    "label_names": (_parse_label_names, "A,B,...|FILE"),
}
"""Parsers of values written as text, by name: ``(parse(text) -> value, how the value is written)``; a parser
raises ValueError (or KeyError) for a malformed value."""
