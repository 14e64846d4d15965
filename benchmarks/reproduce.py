"""Reproductions (issue 21): every report's recipes run on the nearest real data here, with a stated CPU budget,
their held-out Dice set beside the report's own figures, one table per report in ``docs/reproductions.md``.

Data (``../shared/data``): BraTS 2018 (14 cases) for the brain-tumour reports (Buchwald et al. 2022, Henry et al.
2021, Yildiz et al. 2024); IBSR18 Training_Set (10 T1 volumes) for the tissue report (Archit & Adilina 2022); for
the liver transfer report (Wang & Tang 2020), whose LiTS-CT -> liver-MRI data is not here, the same procedure from a
larger source to a small target of another task: ``wang2020-source`` on hippocampus (202 MRI crops), then models
A (scratch), B (initialised) and C (initialised, first stage frozen) on IBSR18. Each dataset is split once by case
(seeded, 20% held out); a run trains on the rest with the recipe, its CPU-budget overrides
(``cpu_budget.overrides``) and ``--time-budget MINUTES``, then predicts and scores the held-out cases. voxseg's
default recipe runs on each dataset with the same budget as a reference.

    python benchmarks/reproduce.py                    # every recipe, 1 training minute each: about an hour
    python benchmarks/reproduce.py --only henry2021   # one recipe (merged into the saved result)
    python benchmarks/reproduce.py --quick            # smoke run: wang2020-source on 10 hippocampus cases
    python benchmarks/reproduce.py --page-only        # rewrite docs/reproductions.md from the saved result

Saves ``benchmarks/results/reproduce.json`` (``--quick``: a temporary folder, the docs untouched) and rewrites
``docs/reproductions.md`` from it.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _heldout import REPO, SHARED_DATA, split_dataset, train_and_test
from _reproductions import BRATS, IBSR, REPORTS, render_page, run_key
from _results import RESULTS_DIR, save_result
from voxseg.cli import train, user_errors
from voxseg.cli_options import apply_recipe, train_options
from voxseg.config import load_recipe

NAME = "reproduce"
PAGE = REPO / "docs" / "reproductions.md"
DATA = {"brats2018": (SHARED_DATA / "brats2018", BRATS), "ibsr18": (SHARED_DATA / "ibsr18" / "Training_Set", IBSR),
        "hippocampus": (SHARED_DATA / "hippocampus", {"anterior": [1], "posterior": [2]})}
QUICK = ("--epochs", "1", "--iterations", "5", "--batch-size", "2", "--val-fraction", "0")
"""What ``--quick`` adds: one short epoch and no validation; the last checkpoint predicts."""
_NOT_KNOBS = ("data", "run_dir", "resume", "overwrite", "plan_only", "recipe")


def _plan() -> list[tuple[str, str]]:
    """Every run, in order, as (recipe, dataset key): the transfer source before its targets."""
    runs = [("wang2020-source", "hippocampus")]
    for report in REPORTS:
        runs += [(r, report.data) for r in report.recipes]
    seen, out = set(), []
    for recipe, data in runs:
        if run_key(recipe, data) not in seen:
            seen.add(run_key(recipe, data))
            out.append((recipe, data))
    return out


def _arguments(recipe: str, minutes: float, seed: int, init_from: Path | None) -> list[str]:
    """The command-line options of one run: the recipe's CPU-budget overrides, the budget, the seed, the transfer
    source. (The held-out cases are left out by ``train_and_test``; the command shown says ``--exclude-cases``.)"""
    overrides = dict(load_recipe(recipe).cpu_budget.get("overrides") or {})
    args = []
    for flag, value in overrides.items():
        args += [f"--{flag}"] if value is True else [f"--{flag}", str(value)]
    args += ["--time-budget", f"{minutes:g}", "--seed", str(seed)]
    return args + (["--init-from", str(init_from)] if init_from else [])


def _options(data: Path, recipe: str, args: list[str]):
    """TrainOptions exactly as ``voxseg train DATA --out RUN --recipe RECIPE ARGS`` makes them."""
    ctx = train.make_context("train", [str(data), "--out", "RUN", "--recipe", recipe, *args])
    kw = {k: v for k, v in ctx.params.items() if k not in _NOT_KNOBS}
    with ctx:
        record = apply_recipe(ctx, kw, recipe)
        options = train_options(kw)
    options.recipe = record
    return options


def _first_val_dice(run_dir: Path) -> float | None:
    log = run_dir / "log.csv"
    if not log.exists():
        return None
    for row in csv.DictReader(log.open()):
        if row.get("val_dice_mean"):
            return round(float(row["val_dice_mean"]), 4)
    return None


def _run_one(recipe: str, data_key: str, minutes: float, seed: int, work: Path, sources: dict,
             extra: tuple[str, ...] = (), tta: str = "none") -> dict:
    data, structures = DATA[data_key]
    _, test_cases = split_dataset(data, seed)
    test_ids = [c.case_id for c in test_cases]
    init_from = sources.get("wang2020-source") if recipe in ("wang2020-finetune", "wang2020-transfer") else None
    args = [*_arguments(recipe, minutes, seed, init_from), *extra]
    shown = [*args[:-2], "--init-from", "SOURCE_RUN"] if init_from else args
    where = f"../{data.relative_to(REPO.parent)}" if data.is_relative_to(REPO.parent) else str(data)
    command = f"voxseg train {where} --out RUN --recipe {recipe} " + " ".join(shown) + \
        f" --exclude-cases {','.join(test_ids)}"
    out = work / run_key(recipe, data_key).replace("@", "_")
    if tta == "recipe":  # the paper's TTA (--tta all is 16 predictions per case: hours for the 3-D nets on a CPU)
        tta = load_recipe(recipe).predict.get("tta", "none")
    which = "swa" if load_recipe(recipe).predict.get("checkpoint") == "swa" else "best"
    which = "last" if "--val-fraction" in extra else which
    start = time.perf_counter()
    held = train_and_test(data, out, _options(data, recipe, args), structures, seed, which=which,
                          tta=(tta if tta in ("none", "flips", "all") else "none",), progress=False)
    if recipe == "wang2020-source":
        sources[recipe] = out / "run"
    dice = {name: round(m["dice"]["mean"], 4) for name, m in held.summary["metrics"].items()}
    return {"data": data_key, "n_train": held.n_train, "n_test": held.n_test, "dice": dice, "command": command,
            "train_minutes": round(held.train.elapsed_minutes, 2), "iterations": held.train.iterations,
            "first_val_dice": _first_val_dice(out / "run"), "best_val_dice": round(held.train.best_metric, 4),
            "tta": tta, "checkpoint": which, "wall_minutes": round((time.perf_counter() - start) / 60, 2),
            "error": None}


def _print_row(key: str, run: dict) -> None:
    if run.get("error"):
        print(f"{key:<32} error: {run['error']}")
        return
    dice = ", ".join(f"{k} {v:.3f}" for k, v in run["dice"].items())
    print(f"{key:<32} {dice}  ({run['iterations']} it in {run['train_minutes']:.1f} min, {run['n_test']} held out)")


def _previous() -> dict:
    path = RESULTS_DIR / f"{NAME}.json"
    return json.loads(path.read_text())["figures"] if path.exists() else {}


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=1.0, help="training minutes per recipe (default 1: with "
                        "preprocessing and predicting 3 held-out BraTS cases per run, the 21 runs take about an hour "
                        "on a quiet 2-4 core CPU)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out split and the training")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this recipe (repeatable; 'default' runs it on every dataset); merged into "
                             "the saved result")
    parser.add_argument("--quick", action="store_true", help="smoke run: wang2020-source on 10 hippocampus cases, one "
                        "epoch of 5 iterations, saved to a temporary folder, the docs left as they are")
    parser.add_argument("--tta", choices=("none", "flips", "recipe"), default="none",
                        help="test-time augmentation of the held-out predictions: none (default: the 3-D networks "
                             "already take minutes per BraTS case on a CPU), flips, or each recipe's own")
    parser.add_argument("--page-only", action="store_true", help="rewrite docs/reproductions.md from the saved result")
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.page_only:
        path = RESULTS_DIR / f"{NAME}.json"
        PAGE.write_text(render_page(json.loads(path.read_text()) if path.exists() else None))
        print(f"written: {PAGE}")
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="voxseg-reproduce-"))
    plan, minutes = _plan(), args.minutes
    if args.quick:  # a pipeline check: small hippocampus crops, so that predicting costs seconds
        plan, minutes = [("wang2020-source", "hippocampus-quick")], min(args.minutes, 0.3)
        quick = work / "hippocampus-quick"
        if not quick.exists():
            source = DATA["hippocampus"][0]
            for sub in ("images", "labels"):
                (quick / sub).mkdir(parents=True)
                for path in sorted((source / "labels").glob("*.nii.gz"))[:10]:
                    (quick / sub / path.name).symlink_to(source / sub / path.name)
        DATA["hippocampus-quick"] = (quick, DATA["hippocampus"][1])
    elif args.only:
        for name in args.only:
            load_recipe(name)  # an unknown name: one line listing the valid ones
        needed = set(args.only) | ({"wang2020-source"} if set(args.only) & {"wang2020-finetune", "wang2020-transfer"}
                                   else set())
        plan = [(r, d) for r, d in plan if r in needed]
    missing = sorted({str(DATA[d][0]) for _, d in plan if not DATA[d][0].is_dir()})
    if missing:
        print(f"skipped: data not found: {', '.join(missing)}")
        plan = [(r, d) for r, d in plan if DATA[d][0].is_dir()]
    runs, sources = {}, {}
    for recipe, data_key in plan:
        print(f"== {recipe} on {data_key}, {minutes:g} training minutes", flush=True)
        try:
            runs[run_key(recipe, data_key)] = _run_one(recipe, data_key, minutes, args.seed, work, sources,
                                                       QUICK if args.quick else (), args.tta)
        except Exception as exc:  # one failing recipe is a row of the table, not the end of the run
            runs[run_key(recipe, data_key)] = {"data": data_key, "error": f"{type(exc).__name__}: {exc}"[:300]}
        _print_row(run_key(recipe, data_key), runs[run_key(recipe, data_key)])
    figures = {"minutes": minutes, "seed": args.seed, "quick": args.quick, "tta": args.tta,
               "runs": runs if args.quick or not args.only else {**_previous().get("runs", {}), **runs}}
    print(json.dumps(figures))
    if args.quick:
        saved = save_result(f"{NAME}_quick", figures, sys.argv, results_dir=work / "results")
        print(f"quick run saved to {saved}; the docs are left as they are")
    else:
        saved = save_result(NAME, figures, sys.argv)
        PAGE.write_text(render_page(json.loads(saved.read_text())))
        print(f"saved {saved}; written {PAGE}")
    if args.work is None:  # the runs are large; a quick run's result stays
        for folder in work.iterdir():
            if folder.name != "results":
                shutil.rmtree(folder, ignore_errors=True) if folder.is_dir() and not folder.is_symlink() else None
    return 0


if __name__ == "__main__":
    sys.exit(main())
