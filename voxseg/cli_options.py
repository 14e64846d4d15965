"""The options of ``voxseg train``, generated from the knobs of :class:`voxseg.config.TrainOptions`.

Each knob (``voxseg.config.train_knobs``) becomes one click option: its flag, type, default, range and help
come from the field, its choices from the registry it names, read when the command is used (so a registered
optimiser, schedule, network, normaliser, denoiser or augmentation preset is a valid choice with no edit here).
:class:`GroupedCommand` writes the help one section per purpose; :func:`options_markdown` renders the same
options as ``docs/options.md``. Part of the command-line stage (``voxseg.cli``): it may import any package.
"""
from __future__ import annotations

import dataclasses
import importlib
import math

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from voxseg.config import Knob, TrainOptions

__all__ = ["GroupedCommand", "REGENERATE", "REGISTRIES", "apply_recipe", "knob_options", "options_markdown", "registry_names", "train_options"]

REGISTRIES: dict[str, tuple[str, str]] = {
    "optimizers": ("voxseg.train.optim", "OPTIMIZERS"),
    "schedules": ("voxseg.train.schedules", "SCHEDULES"),
    "networks": ("voxseg.nets", "NETWORKS"),
    "losses": ("voxseg.losses", "LOSSES"),
    "normalizations": ("voxseg.data.preprocess", "NORMALIZATIONS"),
    "denoisers": ("voxseg.data.enhance", "DENOISERS"),
    "augmentations": ("voxseg.config", "AUGMENTATION_PRESETS"),
    "label_schemes": ("voxseg.data.labels", "SCHEME_NAMES"),
}
"""Registry names a knob's ``choices`` may give -> (module, attribute): a dict or tuple whose keys are the names."""

REGENERATE = "python -m voxseg.cli options-doc > docs/options.md"


def registry_names(name: str) -> list[str]:
    """The names registered in registry ``name`` (a key of :data:`REGISTRIES`), read now."""
    module, attribute = REGISTRIES[name]
    return [str(key) for key in getattr(importlib.import_module(module), attribute)]


class _RegistryChoice(click.Choice):
    """A choice among the names of a registry, read each time it is used (help, parsing)."""

    def __init__(self, registry: str):
        self.registry = registry
        super().__init__([])

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(registry_names(self.registry))

    @choices.setter
    def choices(self, value) -> None:  # click.Choice.__init__ sets it; the registry is the source
        pass


class _LossSpec(click.ParamType):
    """A registered loss or a weighted sum of loss terms (``dice+ce``, ``0.5*dice+1*ce``), checked by the loss
    registry's parser."""

    name = "loss"

    def get_metavar(self, param, ctx=None) -> str:
        return "SPEC"

    def convert(self, value, param, ctx):
        from voxseg.losses import LOSSES
        from voxseg.losses.compound import parse_loss_spec

        if value not in LOSSES:
            try:
                parse_loss_spec(value)
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        return value


class _KnobOption(click.Option):
    """A click option that knows its purpose group and, for a knob, where its value goes in TrainOptions."""

    def __init__(self, *args, group: str = "output", knob: Knob | None = None, path: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.group, self.knob, self.path = group, knob, path


class GroupedCommand(click.Command):
    """A command whose help lists its options in one section per purpose (:data:`voxseg.config.GROUPS`);
    options without a group (``--help``, the command's own) are listed under "output".

    ``more_params``: a function returning more options, called the first time the command's options are needed
    (parsing, help), not when the command line is built, so that ``voxseg --help`` does not import torch.
    """

    def __init__(self, *args, more_params=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._more_params = more_params

    def get_params(self, ctx) -> list:
        if self._more_params is not None:
            more, self._more_params = self._more_params, None
            self.params.extend(more())
        return super().get_params(ctx)

    def format_options(self, ctx, formatter) -> None:
        from voxseg.config import GROUPS

        sections: dict[str, list] = {group: [] for group in GROUPS}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                sections[getattr(param, "group", "output")].append(record)
        for group, rows in sections.items():
            if rows:
                with formatter.section(f"{group[:1].upper()}{group[1:]} options"):
                    formatter.write_dl(rows)


def _base_type(fld: dataclasses.Field) -> str:
    """``"int"``, ``"float"``, ``"bool"`` or ``"str"``: the field's annotation without ``| None``."""
    text = str(fld.type).removesuffix(" | None")
    return text if text in ("int", "float", "bool") else "str"


def _click_type(fld: dataclasses.Field, k: Knob):
    from voxseg.config import interval

    if k.parse:
        return click.STRING
    if isinstance(k.choices, str):
        return _LossSpec() if k.choices == "losses" else _RegistryChoice(k.choices)
    if k.choices:
        return click.Choice([str(c) for c in k.choices])
    kind = _base_type(fld)
    if k.range:
        lo, hi, lo_open, hi_open = interval(k.range)
        bounds = dict(min=None if math.isinf(lo) else lo, max=None if math.isinf(hi) else hi,
                      min_open=lo_open and not math.isinf(lo), max_open=hi_open and not math.isinf(hi))
        if kind == "int":
            return click.IntRange(**{key: int(v) if isinstance(v, float) else v for key, v in bounds.items()})
        return click.FloatRange(**bounds)
    return {"int": click.INT, "float": click.FLOAT}.get(kind, click.STRING)


def _default(fld: dataclasses.Field):
    return fld.default_factory() if fld.default is dataclasses.MISSING else fld.default


def flag_of(fld: dataclasses.Field, k: Knob) -> str:
    """The command-line flag of a knob: its own, or ``--`` and the field name with dashes."""
    return k.flag or f"--{fld.name.replace('_', '-')}"


def knob_option(path: str, fld: dataclasses.Field, k: Knob) -> click.Option:
    """The click option of one knob; its value is the text as typed (parsed by :func:`train_options`), the typed
    value (numbers, choices), or None where the field's default (or the plan) decides."""
    from voxseg.config import PARSERS

    default = _default(fld)
    attrs: dict = dict(help=k.help, group=k.group, knob=k, path=path)
    if _base_type(fld) == "bool" and not k.choices and str(fld.type).endswith("| None"):
        flag = flag_of(fld, k)  # planned unless given: --x or --no-x
        return _KnobOption([f"{flag}/--no-{flag[2:]}", path.replace(".", "__")], default=None, show_default=k.shown,
                           **attrs)
    if _base_type(fld) == "bool" and not k.choices:
        attrs.update(is_flag=True, default=False)
    else:
        literal = k.choices and not isinstance(k.choices, str)
        if k.shown or default is None or isinstance(default, (dict, list, tuple)):
            default = None  # planned, or the field's empty default: not shown as text
        attrs.update(type=_click_type(fld, k), default=str(default) if literal and default is not None else default,
                     show_default=k.shown or default is not None)
        if k.parse:
            attrs["metavar"] = PARSERS[k.parse][1] if k.parse in PARSERS else "K=V,..."
        if literal and isinstance(k.choices[0], int):
            attrs["callback"] = lambda ctx, param, value: None if value is None else int(value)
    return _KnobOption([flag_of(fld, k), path.replace(".", "__")], **attrs)


def knob_options() -> list[click.Option]:
    """One option per knob of :func:`voxseg.config.train_knobs`, in their order."""
    from voxseg.config import train_knobs

    return [knob_option(path, fld, k) for path, fld, k in train_knobs()]


def _parsed(flag: str, parse, text):
    """``parse(text)``, with a malformed value reported as a usage error naming ``flag`` (exit 2)."""
    try:
        return parse(text)
    except KeyError as exc:
        raise click.BadParameter(f"unknown key {exc}", param_hint=f"'{flag}'") from None
    except (ValueError, TypeError) as exc:  # json errors are ValueErrors
        raise click.BadParameter(str(exc), param_hint=f"'{flag}'") from None


def _parser(name: str):
    from voxseg.config import PARSERS

    if name == "loss_args":
        from voxseg.losses import parse_loss_args

        return parse_loss_args
    return PARSERS[name][0]


def train_options(values: dict) -> TrainOptions:
    """TrainOptions from the values of the generated options (``{"train__lr": 0.01, ...}``, None: not given);
    a malformed or contradictory value is a click usage error naming its flag (exit 2)."""
    from voxseg.config import TrainOptions, train_knobs, with_values
    from voxseg.runs import checked_patch_size

    knobs = {path: (flag_of(fld, k), k) for path, fld, k in train_knobs()}
    given = {}
    for name, value in values.items():
        path = name.replace("__", ".")
        flag, k = knobs[path]
        given[path] = _parsed(flag, _parser(k.parse), value) if k.parse and value is not None else value
    given = {path: value for path, value in given.items() if value is not None}
    if given["fold"] != "all" and not given.get("folds"):
        raise click.BadParameter("--fold picks a fold of a cross-validation: give --folds K too", param_hint="'--fold'")
    mode = given.get("train.mode") or ("2d" if given["network.spatial_dims"] == 2 else "3d")
    given["train.mode"] = mode
    if mode in ("2d", "2.5d"):
        given["network.spatial_dims"] = 2
    try:
        given["train.patch_size"] = checked_patch_size(given.get("train.patch_size"), given["network.spatial_dims"])
    except ValueError as exc:
        raise click.BadParameter(str(exc).removeprefix("--patch: "), param_hint="'--patch'") from None
    if given.get("preprocess.ct_window") and given.get("normalization") not in (None, "ct"):
        raise click.BadParameter(f"clips CT intensities: it goes with --normalization ct, not "
                                 f"{given['normalization']}", param_hint="'--ct-window'")
    options = with_values(TrainOptions(), given)
    _parsed("--augment-args", lambda _: options.augmentation(), None)
    return options


def _choices_text(k: Knob) -> str:
    from voxseg.config import PARSERS

    if isinstance(k.choices, str):
        if k.choices == "losses":
            return "a sum of weighted terms, e.g. " + ", ".join(registry_names("losses"))
        return ", ".join(registry_names(k.choices))
    if k.choices:
        return ", ".join(map(str, k.choices))
    if k.range:
        return k.range
    return PARSERS[k.parse][1] if k.parse in PARSERS else ("K=V,..." if k.parse else "")


def options_markdown(command: click.Command) -> str:
    """Every option of ``command`` (``voxseg train``) as Markdown, one table per purpose group: flag, default,
    range or choices, help. ``docs/options.md`` is this text (regenerate: :data:`REGENERATE`)."""
    from voxseg.config import GROUPS

    params = command.get_params(click.Context(command))
    lines = ["# `voxseg train` options", "",
             f"Generated from the knobs of `voxseg.config` by `{REGENERATE}`; do not edit by hand.", ""]
    for group in GROUPS:
        rows = [p for p in params if isinstance(p, click.Option) and getattr(p, "group", "output") == group
                and "--help" not in p.opts]  # click names its help option differently across versions
        if not rows:
            continue
        lines += [f"## {group[:1].upper()}{group[1:]}", "", "| option | default | range / choices | what it does |",
                  "|---|---|---|---|"]
        for p in rows:
            k = getattr(p, "knob", None)
            if p.required:
                default = "required"
            elif k is not None and k.shown:
                default = k.shown
            elif p.is_flag:
                default = "off"
            else:
                default = str(p.default) if isinstance(p.default, (str, int, float)) else ""
            limits = _choices_text(k) if k is not None else ""
            cells = [f"`{' / '.join(p.opts + p.secondary_opts)}`", default, limits, p.help or ""]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)[:-1] + "\n"


def apply_recipe(ctx: click.Context, values: dict, name: str) -> dict:
    """Fill ``values`` (the generated options' values, ``{"train__lr": ..., ...}``) from recipe ``name``
    (:func:`voxseg.config.load_recipe`), in place, leaving the options given on the command line as typed: those
    override the recipe. Each recipe value is converted as click converts typed text (types, ranges, registry
    choices, callbacks).

    Returns:
        ``{"name": ..., "values": {flag: value taken from the recipe}, "overridden": [flags given instead]}``,
        what ``plan.json`` records.

    Raises:
        InputError: unknown recipe (naming the valid ones), or a recipe value its option refuses (naming the file).
    """
    from click.core import ParameterSource

    from voxseg.config import load_recipe
    from voxseg.errors import InputError

    recipe = load_recipe(name)
    options = {p.opts[0]: p for p in ctx.command.get_params(ctx) if isinstance(p, _KnobOption) and p.knob}
    taken, overridden = {}, []
    for flag, value in recipe.values.items():
        param = options.get(f"--{flag}")
        if param is None:
            raise InputError(recipe.path, f"{flag}: not a 'voxseg train' option")
        if ctx.get_parameter_source(param.name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            overridden.append(f"--{flag}")
            continue
        try:
            values[param.name] = param.process_value(ctx, value if isinstance(value, bool) else str(value))
        except click.BadParameter as exc:
            raise InputError(recipe.path, f"--{flag} {value}: {exc.message}") from None
        taken[flag] = value
    return {"name": recipe.name, "values": taken, "overridden": overridden}
