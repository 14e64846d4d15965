"""Shared by ``benchmarks/reproduce.py``: what each report claims (its own figures, its comparisons), the real data
here that stands in for its data, and ``docs/reproductions.md`` made from the saved result.

The report figures below are copied from the reports (the tables they cite); everything voxseg measured comes from
``benchmarks/results/reproduce.json``, never typed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

__all__ = ["REPORTS", "Report", "Claim", "BRATS", "IBSR", "render_page", "row_verdict", "run_key"]

BRATS = {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4], "NCR": [1], "ED": [2]}
"""BraTS structures scored on BraTS 2018: the regions (whole tumour, tumour core, enhancing) and the classes
(necrotic / non-enhancing core, oedema); ET is both a class and a region."""
IBSR = {"CSF": [1], "GM": [2], "WM": [3]}
"""IBSR18 tissues."""
TOLERANCE = 0.05
"""A figure 'holds' when voxseg's held-out Dice is at most this much below the report's."""


@dataclass(frozen=True)
class Claim:
    """A comparison a report makes, checked on voxseg's figures.

    Attributes:
        text: the claim in a few words, e.g. "2-D beats 3-D minicubes".
        check: runs (recipe -> measured figures) -> (holds, what voxseg measured), or None when a run is missing.
    """

    text: str
    check: Callable[[dict], tuple[bool, str] | None]


@dataclass(frozen=True)
class Report:
    """One report and its reproduction.

    Attributes:
        key: the recipes' ``report`` field (``"henry2021"``).
        data: the dataset key of ``benchmarks/reproduce.py`` the recipes run on (``"brats2018"``, ``"ibsr18"``).
        citation: authors, year, venue.
        their_data: the report's data, as it says.
        our_data: the folder under ``../shared/data`` voxseg runs it on, and how it differs.
        structures: structure -> label values scored.
        recipes: the recipes run, in table order.
        figures: recipe -> structure -> the report's figure (a number, or a text such as "0 (all background)").
        figures_source: where in the report the figures are.
        claims: its comparisons.
        errors: where the report is wrong or contradicts what it cites (the recipes follow the cited papers).
        gap: why voxseg's figures can differ: data and budget.
    """

    key: str
    data: str
    citation: str
    their_data: str
    our_data: str
    structures: dict[str, list[int]]
    recipes: tuple[str, ...]
    figures: dict[str, dict[str, object]]
    figures_source: str
    claims: tuple[Claim, ...] = ()
    errors: tuple[str, ...] = ()
    gap: str = ""
    extra: dict = field(default_factory=dict)


def run_key(recipe: str, data: str) -> str:
    """The key of a run in the result: the recipe's name; ``default@<data>`` for the default, run on each dataset."""
    return f"default@{data}" if recipe == "default" else recipe


def _mean(run: dict | None, names: tuple[str, ...]) -> float | None:
    if not run or run.get("error") or not run.get("dice"):
        return None
    values = [run["dice"].get(n) for n in names]
    return None if any(v is None for v in values) else sum(values) / len(values)


def _better(a: str, b: str, names: tuple[str, ...], label: str) -> Callable[[dict], tuple[bool, str] | None]:
    def check(runs: dict):
        x, y = _mean(runs.get(a), names), _mean(runs.get(b), names)
        if x is None or y is None:
            return None
        return x > y, f"{label}: {a} {x:.3f} vs {b} {y:.3f}"
    return check


def _close(names: tuple[str, ...], recipes: tuple[str, ...], within: float) -> Callable:
    def check(runs: dict):
        values = [_mean(runs.get(r), names) for r in recipes]
        if any(v is None for v in values):
            return None
        spread = max(values) - min(values)
        return spread <= within, "held-out Dice " + ", ".join(f"{r} {v:.3f}" for r, v in zip(recipes, values)) + \
            f" (spread {spread:.3f})"
    return check


def _faster(order: tuple[str, ...]) -> Callable:
    def check(runs: dict):
        values = [(runs.get(r) or {}).get("first_val_dice") for r in order]
        if any(v is None for v in values):
            return None
        holds = all(a > b for a, b in zip(values, values[1:]))
        return holds, "validation Dice after the first epoch " + ", ".join(f"{r} {v:.3f}" for r, v in zip(order, values))
    return check


_CPU_GAP = "voxseg trains each recipe for minutes on a CPU with the recipe's CPU-budget overrides"
REPORTS: tuple[Report, ...] = (
    Report("buchwald2022", "brats2018", "Buchwald, Heumann, Tobin, Youssef & Zemann (2022), course report",
           "BraTS 2017, 484 training cases", "brats2018: 14 BraTS 2018 cases (same kind of data, 35x fewer cases)",
           BRATS, ("buchwald2022-2d", "buchwald2022-minicubes", "buchwald2022-context", "buchwald2022-focal-tversky",
                   "default"),
           {"buchwald2022-2d": {"all": "not reported ('unavailable')"},
            "buchwald2022-minicubes": {"NCR": "0 (all background)", "ED": "0 (all background)", "ET": "0 (all background)"},
            "buchwald2022-context": {"NCR": "0 (all background)", "ED": "0 (all background)", "ET": "0 (all background)"},
            "buchwald2022-focal-tversky": {"all": "not reported (abandoned for Dice)"}},
           "Table 2 (precision 0, recall and F1 NaN for every tumour class of both 3-D models)",
           (Claim("the 2-D model does better than the 3-D minicube models",
                  _better("buchwald2022-2d", "buchwald2022-minicubes", ("WT", "TC", "ET"), "mean region Dice")),
            Claim("context around the minicubes helps",
                  _better("buchwald2022-context", "buchwald2022-minicubes", ("WT", "TC", "ET"), "mean region Dice")),
            Claim("Dice loss does better than focal Tversky",
                  _better("buchwald2022-minicubes", "buchwald2022-focal-tversky", ("WT", "TC", "ET"), "mean region Dice"))),
           ("Its 3-D results (all background) come with no 2-D numbers at all, yet it states that 2-D did better.",
            "It blames a wrong focal-Tversky gamma 'in some references'; the recipe uses Abraham & Khan's (2019)."),
           _CPU_GAP + "; the report gives no epochs"),
    Report("archit2022", "ibsr18", "Archit & Adilina (2022), MISA course report", "IBSR18, 10 training + 5 validation volumes",
           "ibsr18/Training_Set: the same 10 training volumes (held-out cases are a seeded split of them, not the "
           "course's validation set)", IBSR,
           ("archit2022-unet", "archit2022-resunet", "archit2022-denseunet", "archit2022-3d", "archit2022-unet-tversky",
            "archit2022-unet-focal-tversky", "default"),
           {"archit2022-unet": {"CSF": 0.8220, "WM": 0.8814, "GM": 0.9163},
            "archit2022-resunet": {"CSF": 0.8133, "WM": 0.9234, "GM": 0.9488},
            "archit2022-denseunet": {"CSF": 0.8015, "WM": 0.9187, "GM": 0.9412},
            "archit2022-3d": {"CSF": 0.7245, "WM": 0.9563, "GM": 0.9771},
            "archit2022-unet-tversky": {"CSF": 0.7954, "GM": 0.9114, "WM": 0.8378},
            "archit2022-unet-focal-tversky": {"CSF": 0.8121, "GM": 0.9103, "WM": 0.8343}},
           "Table 1 (validation Dice per model); Table 4 (2-D U-Net per loss)",
           (Claim("the 2-D U-Net is the best model (abstract)",
                  _better("archit2022-unet", "archit2022-3d", ("CSF", "GM", "WM"), "mean tissue Dice")),
            Claim("the 3-D U-Net segments WM and GM best (Table 1)",
                  _better("archit2022-3d", "archit2022-unet", ("GM", "WM"), "mean GM/WM Dice")),
            Claim("residual blocks help the 2-D U-Net (Table 1, WM/GM)",
                  _better("archit2022-resunet", "archit2022-unet", ("GM", "WM"), "mean GM/WM Dice")),
            Claim("cross-entropy beats Tversky for the 2-D U-Net (Table 4)",
                  _better("archit2022-unet", "archit2022-unet-tversky", ("CSF", "GM", "WM"), "mean tissue Dice"))),
           ("The abstract calls the 2-D U-Net the best model while its Table 1 gives the 3-D U-Net the best WM and GM.",
            "Table 4's 2-D cross-entropy figures differ from Table 1's 2-D column.",
            "Tversky alpha/beta swapped and focal Tversky written (1-TL)^gamma against the cited papers."),
           _CPU_GAP + " (the report: 200 epochs of 2-D, 500 of 3-D, on a GPU)"),
    Report("wang2020", "ibsr18", "Wang & Tang (2020), course report",
           "source: 1,100 LiTS CT slices (liver + tumour); target: 36 arterial-phase liver MRI volumes (tumour)",
           "source: hippocampus (202 T1 MRI crops, Medical Segmentation Decathlon); target: ibsr18/Training_Set "
           "(10 T1 MRI volumes, tissue). Chosen because, as in the report, the source is the larger dataset of another "
           "task and the target a small one whose head differs (3 classes -> 4); both are single-channel MRI, so this "
           "tests the report's procedure, not CT-to-MRI transfer", IBSR,
           ("wang2020-scratch", "wang2020-finetune", "wang2020-transfer"),
           {r: {"all": "no figures (learning curves only)"} for r in ("wang2020-scratch", "wang2020-finetune",
                                                                    "wang2020-transfer")},
           "Section 3.2.4 and Fig. 10 (learning curves; no Dice reported)",
           (Claim("the three models end at comparable performance",
                  _close(("CSF", "GM", "WM"), ("wang2020-scratch", "wang2020-finetune", "wang2020-transfer"), 0.05)),
            Claim("convergence: scratch (A) faster than initialised (B) faster than frozen (C)",
                  _faster(("wang2020-scratch", "wang2020-finetune", "wang2020-transfer")))),
           ("Fine-tuning learning rate given as 5e-4 'not changed' from a pre-training rate of 1e-4; the recipes use 1e-4.",),
           _CPU_GAP + "; the source run gets the same minutes as each target run"),
    Report("henry2021", "brats2018", "Henry, Carré, Lerousseau, Estienne, Robert, Paragios & Deutsch (2021), BrainLes 2020",
           "BraTS 2020, 369 training cases, five-fold cross-validation", "brats2018: 14 BraTS 2018 cases", BRATS,
           ("henry2021", "henry2021-b", "default"),
           {"henry2021": {"ET": 0.8077, "WT": 0.9070, "TC": 0.8705},
            "henry2021-b": {"ET": 0.72738, "WT": 0.91123, "TC": 0.84921}},
           "Table 2 (pipeline A, cross-validation); Table 3 (pipeline B alone, online validation)",
           (Claim("pipeline B segments the whole tumour better than A",
                  _better("henry2021-b", "henry2021", ("WT",), "WT Dice")),
            Claim("pipeline A segments the enhancing tumour better than B",
                  _better("henry2021", "henry2021-b", ("ET",), "ET Dice"))),
           ("Its Dice loss (eq. 2) lacks the factor 2 of the cited V-Net loss; voxseg uses the cited form.",),
           _CPU_GAP + " (the report: 200 + 150 SWA epochs per fold on a GPU, 128^3 patches)"),
    Report("yildiz2024", "brats2018", "Yildiz, Çakir & Kizilişik (2024), project report", "BraTS 2021, 850 train / 250 val / 150 test",
           "brats2018: 14 BraTS 2018 cases", BRATS, ("yildiz2024-unet", "yildiz2024-unet-ce", "yildiz2024-vnet", "default"),
           {"yildiz2024-unet": {"NCR": 0.2649, "ED": 0.5158, "ET": 0.3185},
            "yildiz2024-unet-ce": {"NCR": 0.2447, "ED": 0.4532, "ET": 0.2804},
            "yildiz2024-vnet": {"all": "no figures (picture only)"}},
           "Table 4 (Dice per class)",
           (Claim("Dice + Tversky beats cross-entropy",
                  _better("yildiz2024-unet", "yildiz2024-unet-ce", ("NCR", "ED", "ET"), "mean class Dice")),
            Claim("three channels (t1ce, t2, flair) beat FLAIR alone",
                  _better("yildiz2024-unet", "yildiz2024-vnet", ("NCR", "ED", "ET"), "mean class Dice"))),
           ("Calls U-Net a recurrent network; it is convolutional.",
            "Says the final model used FLAIR alone and also reports a three-channel U-Net."),
           _CPU_GAP + " (the report: 30 epochs x 213 batches of 4 x 128^3 on a GPU)"),
)


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else str(value)


def row_verdict(report: Report, recipe: str, run: dict | None) -> str:
    """The verdict on one recipe's figures: holds, does not hold (and why), or nothing to compare."""
    theirs = report.figures.get(recipe, {})
    if run is None:
        return "not run"
    if run.get("error"):
        return f"error: {run['error']}"
    numbers = {k: v for k, v in theirs.items() if isinstance(v, (int, float))}
    if not numbers:
        if any("background" in str(v) for v in theirs.values()):
            found = _mean(run, tuple(k for k in theirs if k in run["dice"]))
            return ("does not hold: voxseg finds tumour (mean Dice %.3f), the report's all-background result was its "
                    "own error (shallow network, loss settings)" % found) if found and found > 0.05 else \
                "holds: voxseg's Dice also stays near zero in this budget (mean %.3f)" % (found or 0.0)
        return "nothing to compare: the report gives no figure"
    gaps = {k: run["dice"].get(k, 0.0) - v for k, v in numbers.items()}
    worst = min(gaps, key=gaps.get)
    if gaps[worst] >= -TOLERANCE:
        return "holds" + (" (voxseg higher)" if min(gaps.values()) > TOLERANCE else "")
    return (f"does not hold here: {worst} {gaps[worst]:+.3f}; budget (minutes on a CPU) and data "
            f"({report.our_data.split(':')[0]}) differ from the report's")


def _section(report: Report, record: dict | None) -> list[str]:
    runs = (record or {}).get("figures", {}).get("runs", {})
    names = list(report.structures)
    lines = [f"## {report.key}", "", f"**{report.citation}.** Their data: {report.their_data}. Ours: {report.our_data}.",
             f"Their figures: {report.figures_source}. Why figures may differ: {report.gap}.", "",
             "| recipe | " + " | ".join(f"{n} report / voxseg" for n in names) + " | budget | verdict |",
             "|---|" + "---|" * (len(names) + 2)]
    for recipe in report.recipes:
        theirs, run = report.figures.get(recipe, {}), runs.get(run_key(recipe, report.data))
        cells = []
        for i, n in enumerate(names):
            mine = "-" if not run or run.get("error") else _fmt(run.get("dice", {}).get(n, "-"))
            cells.append(f"{_fmt(theirs.get(n, theirs.get('all', '-') if i == 0 else '-'))} / {mine}")
        budget = f"{run['train_minutes']:.1f} min, {run['iterations']} it" if run and not run.get("error") else "-"
        lines.append(f"| `{recipe}` | " + " | ".join(cells) + f" | {budget} | "
                     f"{row_verdict(report, recipe, run) if recipe in report.figures else 'reference: voxseg default'} |")
    if report.claims:
        lines += ["", "| the report's claim | voxseg measured | verdict |", "|---|---|---|"]
        for claim in report.claims:
            result = claim.check(runs) if runs else None
            if result is None:
                measured, verdict = ("a run failed or is missing" if runs else "not yet measured"), "-"
            else:
                measured = result[1]
                verdict = "holds" if result[0] else ("does not hold here: with minutes of CPU training on "
                                                     f"{report.data}, not the report's budget and data")
            lines.append(f"| {claim.text} | {measured} | {verdict} |")
    if report.errors:
        lines += ["", "Errors in the report (the recipes follow the cited papers): " + " ".join(report.errors)]
    keys = [run_key(r, report.data) for r in report.recipes]
    commands = [(k, runs[k]["command"]) for k in keys if k in runs and runs[k].get("command")]
    if commands:
        lines += ["", "Commands (held-out cases left out by `--exclude-cases`):", ""]
        lines += [f"- `{command}`" for _, command in commands]
    return lines + [""]


def render_page(record: dict | None) -> str:
    """``docs/reproductions.md`` from the saved result of ``benchmarks/reproduce.py`` (None: not yet measured)."""
    lines = ["# Reproductions of the reports' systems", "",
             "<!-- Made by benchmarks/reproduce.py from benchmarks/results/reproduce.json: edit those, not this page. -->",
             "", "Each table runs the [recipes](recipes.md) of one report on the nearest real data in `../shared/data` "
             "with a stated CPU budget, and sets the report's own figures beside voxseg's held-out Dice (a seeded "
             f"20% of the cases, never trained on). A figure holds when voxseg's is at most {TOLERANCE} below the "
             "report's; a claim holds when voxseg's runs show the same ordering.", ""]
    if record is None:
        lines += ["Not yet measured: `python benchmarks/reproduce.py` (about an hour on a CPU; `--only NAME` runs one "
                  "recipe, `--quick` a one-recipe smoke run).", ""]
    else:
        f = record["figures"]
        machine = record.get("machine") or {}
        lines += [f"Command: `{record.get('command')}`; commit `{record.get('commit')}`; date (UTC) {record.get('date')}; "
                  f"machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
                  f"{'GPU ' + str(machine['gpu']) if machine.get('gpu') else 'no GPU'}. Budget: {f.get('minutes')} "
                  f"training minutes per recipe, seed {f.get('seed')}, held-out predictions with TTA "
                  f"{f.get('tta', 'none')} (the papers' TTA, e.g. Henry et al.'s 16 variants, is left out unless "
                  "`--tta recipe`).", ""]
    for report in REPORTS:
        lines += _section(report, record)
    return "\n".join(lines).rstrip() + "\n"
