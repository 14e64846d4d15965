"""Named recipes: the settings of a published system as a data file, applied with ``voxseg train --recipe NAME``.

A recipe is one JSON file in ``voxseg/config/recipes/`` (package data, not code), named by the first author and
year of the report it follows (``henry2021``, ``buchwald2022-2d``) or ``default``. It holds:

- ``name``, ``title``, ``paper`` (``authors``, ``year``, ``title``, ``venue``), ``report`` (the key that groups the
  recipes of one report), ``data`` (what data it is for), ``summary`` (one line);
- ``values``: ``voxseg train`` options by flag without the dashes (``"net": "henry3d"``, ``"patch": "128x128x128"``,
  ``"n4": true``), written as the command line accepts them; options given on the command line override them;
- ``predict``: the paper's prediction settings (TTA, merge table, checkpoint, post-processing), as advice for
  ``voxseg predict``;
- ``deviations``: where voxseg departs from the paper and why; ``notes``: where the report is ambiguous or
  contradicts the paper it cites (the recipe follows the cited paper and says so);
- ``cpu_budget``: ``overrides`` (options that make a GPU-sized recipe fit a CPU budget, keeping the paper's
  network) and ``what_it_gives``.

:func:`recipe_problems` checks the values against the knobs (flag names, the parsers of
:data:`voxseg.config.PARSERS`, ranges and literal choices); registry choices (networks, losses, ...) live in later
packages and are checked where the command line applies a recipe.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxseg.config.knobs import PARSERS, interval
from voxseg.config.options import train_knobs
from voxseg.errors import InputError

__all__ = ["RECIPES_DIR", "Recipe", "list_recipes", "load_recipe", "recipe_flags", "recipe_problems",
           "format_recipe", "recipes_table"]

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
"""Where the recipe files are: ``<name>.json``."""


@dataclass(frozen=True)
class Recipe:
    """One recipe as read from its file (see the module docstring for the fields)."""

    name: str
    title: str
    paper: dict[str, Any]
    report: str
    data: str
    summary: str
    values: dict[str, Any]
    predict: dict[str, Any] = field(default_factory=dict)
    deviations: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    cpu_budget: dict[str, Any] = field(default_factory=dict)
    path: Path = RECIPES_DIR

    @property
    def citation(self) -> str:
        """``"Henry, Carré, ... & Deutsch (2021), <title>, <venue>"``."""
        p = self.paper
        return f"{p.get('authors', '?')} ({p.get('year', '?')}), {p.get('title', '')}, {p.get('venue', '')}"

    @property
    def short_citation(self) -> str:
        """First author and year: ``"Henry et al. 2021"``, ``"Wang & Tang 2020"``."""
        authors = str(self.paper.get("authors", "?"))
        names = [a.strip() for a in authors.replace(" & ", ", ").split(",") if a.strip()]
        who = authors if len(names) <= 2 else f"{names[0]} et al."
        return f"{who} {self.paper.get('year', '')}".strip()

    def command(self, data: str = "DATA", out: str = "RUN", overrides: dict[str, Any] | None = None) -> str:
        """The ``voxseg train`` command that applies this recipe, with ``overrides`` as command-line options."""
        extra = " ".join(_option_text(flag, value) for flag, value in (overrides or {}).items())
        return f"voxseg train {data} --out {out} --recipe {self.name}" + (f" {extra}" if extra else "")


def _option_text(flag: str, value: Any) -> str:
    if value is True:
        return f"--{flag}"
    text = str(value)
    return f"--{flag} {text}" if text and " " not in text else f"--{flag} '{text}'"


def _recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.json"))


def _read(path: Path) -> Recipe:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        fields = {k: document[k] for k in ("name", "title", "paper", "report", "data", "summary", "values")}
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except KeyError as exc:
        raise InputError(path, f"not a recipe: missing field {exc}") from None
    if fields["name"] != path.stem:
        raise InputError(path, f"recipe name {fields['name']!r} differs from its file name")
    return Recipe(**fields, predict=dict(document.get("predict", {})),
                  deviations=tuple(document.get("deviations", ())), notes=tuple(document.get("notes", ())),
                  cpu_budget=dict(document.get("cpu_budget", {})), path=path)


def list_recipes() -> list[Recipe]:
    """Every recipe, ``default`` first, then by name."""
    names = _recipe_names()
    return [_read(RECIPES_DIR / f"{n}.json") for n in sorted(names, key=lambda n: (n != "default", n))]


def load_recipe(name: str) -> Recipe:
    """The recipe called ``name``.

    Raises:
        InputError: no recipe has that name (the message lists the valid ones), or its file is malformed.
    """
    path = RECIPES_DIR / f"{name}.json"
    if "/" in name or "\\" in name or not path.is_file():
        raise InputError(name, f"no such recipe; choose one of {', '.join(_recipe_names())} ('voxseg recipes' "
                               "lists them)")
    return _read(path)


def recipe_flags() -> dict[str, tuple[str, Any]]:
    """Every ``voxseg train`` knob by flag without dashes -> ``(path in TrainOptions, its field, its Knob)``."""
    return {(k.flag or f"--{f.name.replace('_', '-')}")[2:]: (path, f, k) for path, f, k in train_knobs()}


def _value_problem(flag: str, value: Any, fld, k) -> str | None:
    """What is wrong with ``value`` for knob ``k`` (None: nothing this package can tell)."""
    kind = str(fld.type).removesuffix(" | None")
    if kind == "bool" and not k.choices:
        return None if isinstance(value, bool) else f"{flag}: expected true or false, got {value!r}"
    if k.parse in PARSERS:
        try:
            PARSERS[k.parse][0](str(value))
        except (ValueError, KeyError, TypeError, InputError) as exc:
            return f"{flag}: {exc}"
        return None
    if k.choices and not isinstance(k.choices, str) and str(value) not in {str(c) for c in k.choices}:
        return f"{flag}: {value!r} is not one of {', '.join(map(str, k.choices))}"
    if kind in ("int", "float") and not k.choices:
        try:
            number = int(str(value)) if kind == "int" else float(value)
        except ValueError:
            return f"{flag}: expected a{'n integer' if kind == 'int' else ' number'}, got {value!r}"
        if k.range:
            lo, hi, lo_open, hi_open = interval(k.range)
            if number < lo or number > hi or (lo_open and not math.isinf(lo) and number == lo) or (
                    hi_open and not math.isinf(hi) and number == hi):
                return f"{flag}: {value!r} is outside {k.range}"
    return None


def recipe_problems(values: dict[str, Any]) -> list[str]:
    """What is wrong with a recipe's ``values``: unknown flags, and values the knob parsers, ranges or literal
    choices refuse (one line each; empty: none found here)."""
    flags = recipe_flags()
    problems = []
    for flag, value in values.items():
        if flag not in flags:
            problems.append(f"{flag}: not a 'voxseg train' option")
            continue
        problem = _value_problem(flag, value, *flags[flag][1:])
        if problem:
            problems.append(problem)
    return problems


def _short(text: str, width: int = 40) -> str:
    """``text`` up to its first comma, semicolon or bracket, at most ``width`` characters."""
    for mark in (",", ";", "("):
        text = text.split(mark)[0]
    text = text.strip()
    return text if len(text) <= width else text[:width - 3] + "..."


def recipes_table(recipes: list[Recipe]) -> str:
    """One row per recipe: name, paper (first author and year), data, one-line summary."""
    rows = [("name", "paper", "data", "summary")] + [
        (r.name, r.short_citation, _short(r.data), r.summary) for r in recipes]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 7)
    return "\n".join(lines)


def format_recipe(recipe: Recipe) -> str:
    """A recipe in full, as ``voxseg recipes NAME`` prints it."""
    lines = [f"{recipe.name}: {recipe.title}", f"paper: {recipe.citation}", f"data: {recipe.data}",
             f"summary: {recipe.summary}", f"command: {recipe.command()}", "", "values (options on the command line "
             "override them):"]
    lines += [f"  {_option_text(flag, value)}" for flag, value in recipe.values.items()]
    if recipe.predict:
        lines += ["", "prediction, as the paper (advice for voxseg predict):"]
        lines += [f"  {key}: {value}" for key, value in recipe.predict.items()]
    for title, items in (("deviations from the paper", recipe.deviations), ("notes", recipe.notes)):
        if items:
            lines += ["", f"{title}:"] + [f"  - {item}" for item in items]
    if recipe.cpu_budget:
        overrides = recipe.cpu_budget.get("overrides") or {}
        lines += ["", "on a CPU budget:", f"  {recipe.cpu_budget.get('what_it_gives', '')}"]
        if overrides:
            lines.append(f"  {recipe.command(overrides={**overrides, 'time-budget': 'MINUTES'})}")
    return "\n".join(lines)
