"""Make ``docs/benchmarks.md`` and the README's figures table from the saved benchmark results.

Every script under ``benchmarks/`` saves its final figures as ``benchmarks/results/<name>.json``
(``benchmarks/_results.py``: figures, command line, commit, date, machine). This script reads them all and writes

- ``docs/benchmarks.md``: per benchmark, what it measures, its command, its headline figures and where they come
  from (command, commit, date, machine); a benchmark without a result says "not yet measured" and its command;
- the README's figures table, between ``<!-- figures:start -->`` and ``<!-- figures:end -->``.

So the figures a user reads are made from the results, never typed. Run it after a benchmark:

    python benchmarks/figures_page.py            # rewrite both
    python benchmarks/figures_page.py --check    # exit 1 if either is not what the results make
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- figures:start -->", "<!-- figures:end -->"

__all__ = ["Benchmark", "BENCHMARKS", "load_results", "headline", "render_page", "render_readme_block",
           "replace_readme_block", "write_figures", "main"]


@dataclass(frozen=True)
class Benchmark:
    """One benchmark as the pages show it.

    Attributes:
        name: the result's file name without ``.json`` (``benchmarks/results/<name>.json``).
        command: the command that makes the result.
        title: a few words, the README's "what it measures".
        measures: what it measures and how, for the benchmarks page.
        reference: what the figure is compared with.
        topic: the user-guide page (and anchor) whose behaviour the benchmark backs, relative to ``docs/``.
        headline: figures -> one line of the headline figures.
    """
    name: str
    command: str
    title: str
    measures: str
    reference: str
    topic: str
    headline: Callable[[dict], str]


def _f(value, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


def _patch(patch) -> str:
    return "x".join(str(p) for p in patch)


def _hippocampus(r: dict) -> str:
    line = (f"held-out Dice anterior {_f(r['dice_anterior'])}, posterior {_f(r['dice_posterior'])} "
            f"(mean {_f(r['dice_mean'])}")
    if "dice_anterior_no_tta" in r and "dice_posterior_no_tta" in r:
        line += f"; {_f((r['dice_anterior_no_tta'] + r['dice_posterior_no_tta']) / 2)} without TTA"
    return line + f"), {r['iterations']:,} iterations in {r['train_minutes']:g} min"


def _time_budget(r: dict) -> str:
    parts = []
    for budget, plans in r.items():
        t, m = plans["time"], plans["memory"]
        parts.append(f"{budget} min: patch planned for the budget {_patch(t['patch'])}, {t['iterations']:,} iterations, "
                     f"mean Dice {_f(t['dice_mean'])}; for memory alone {_patch(m['patch'])}, {m['iterations']:,} "
                     f"iterations, {_f(m['dice_mean'])}")
    return "; ".join(parts)


def _memory_plan(r: dict) -> str:
    return (f"estimate / measured peak between {_f(r['min_estimate_over_measured'], 2)} and "
            f"{_f(r['max_estimate_over_measured'], 2)} over {len(r['rows'])} configurations")


def _per_run_dice(r: dict) -> str:
    return "; ".join(f"{run}: mean Dice {_f(row['dice_mean'])} ({row['iterations']:,} iterations)"
                     for run, row in r.items())


def _variants(r: dict) -> str:
    ranked = sorted(r.items(), key=lambda item: -item[1]["dice_mean"])
    return "held-out mean Dice: " + ", ".join(f"{name} {_f(row['dice_mean'])} ({row['iterations']:,} iterations)"
                                              for name, row in ranked)


def _reproduce(r: dict) -> str:
    runs = r["runs"]
    failed = sum(1 for run in runs.values() if run.get("error"))
    return (f"{len(runs) - failed} recipe runs of the five reports, {r['minutes']:g} CPU-minutes each"
            + (f", {failed} failed" if failed else "") + ": tables and verdicts in docs/reproductions.md")


def _loader(r: dict) -> str:
    return "; ".join(f"{name}: augmentation {row['speedup_vs_monai']:g}x as fast as MONAI's, the model waits for "
                     f"data {row['data_wait_fraction']:.1%} of a step" for name, row in r.items())


def _cache_memory(r: dict) -> str:
    return (f"peak anonymous memory {_f(r['peak_anon_gib_mmap'], 2)} GiB memory-mapped against "
            f"{_f(r['peak_anon_gib_ram'], 2)} GiB in RAM (dataset {_f(r['dataset_gib'], 2)} GiB); loading and "
            f"sampling {_f(r['seconds_mmap'], 1)} s against {_f(r['seconds_ram'], 1)} s")


def _inference(r: dict) -> str:
    if "speedup_vs_voxseg_torch" in r:  # the backends' benchmark: voxseg with OpenVINO against every peer
        sec = r["seconds"]
        return (f"voxseg with OpenVINO ({r['voxseg_openvino_method']}) {sec[r['voxseg_openvino_method']]:g} s, "
                f"{_f(r['peak_rss_gib'], 2)} GiB: {_f(r['speedup_vs_voxseg_torch'], 2)}x voxseg with PyTorch, "
                f"{_f(r['speedup_vs_monai'], 2)}x MONAI, {_f(r['speedup_vs_openvino_peer'], 2)}x a plain OpenVINO "
                f"sliding window; label agreement with float32 {_f(r['label_dice_vs_fp32'])}; {r['cpu']}, "
                f"{r['threads']} threads")
    return (f"voxseg {r['voxseg_seconds']:g} s, {_f(r['peak_rss_gib'], 2)} GiB; MONAI {r['monai_seconds']:g} s, "
            f"{_f(r['monai_peak_rss_gib'], 2)} GiB: {_f(r['speedup_vs_monai'], 2)}x faster; label agreement "
            f"{_f(r['label_dice'])} (same input {_f(r['label_dice_same_input'])}; MONAI against itself with its "
            f"windows moved by {r['shift_voxels']} voxels {_f(r['label_dice_monai_shifted'])})")


def _validation_backend(r: dict) -> str:
    b = r["backends"]
    return (f"{r['windows']} windows of {r['window']}^3 per validation: PyTorch {b['torch']['median_s']:g} s, "
            f"OpenVINO (converted at each validation) {b['openvino']['median_s']:g} s "
            f"({_f(r['speedup_openvino_vs_torch'], 2)}x), auto chose {r['auto_choice']} ({b['auto']['median_s']:g} s; "
            f"first validation, measuring, {b['auto']['first_s']:g} s); Dice within {r['dice_max_difference']:g} "
            f"of PyTorch's; {r['cpu']}, {r['threads']} threads")


def _brats(r: dict) -> str:
    return (f"held-out Dice WT {_f(r['dice_wt'])}, TC {_f(r['dice_tc'])}, ET {_f(r['dice_et'])}; HD95 WT "
            f"{r['hd95_wt_mm']:g} mm; {r['iterations']:,} iterations in {r['train_minutes']:g} min")


def _ibsr(r: dict) -> str:
    tta = r.get("tta", "none")
    line = (f"held-out Dice CSF {_f(r['dice_csf'])}, GM {_f(r['dice_gm'])}, WM {_f(r['dice_wm'])} (TTA {tta}); HD95 "
            f"GM {r['hd95_gm_mm']:g} mm; {r['iterations']:,} iterations in {r['train_minutes']:g} min")
    if "dice_gm_no_tta" in r:
        line += (f"; without TTA CSF {_f(r['dice_csf_no_tta'])}, GM {_f(r['dice_gm_no_tta'])}, WM "
                 f"{_f(r['dice_wm_no_tta'])} ({r['predict_seconds_per_case_no_tta']:g} s per case against "
                 f"{r['predict_seconds_per_case']:g} s)")
    return line


def _window_placement(r: dict) -> str:
    return "; ".join(f"{run}: crop vs whole-extent agreement {_f(row['crop_vs_whole'])}, WT Dice {_f(row['dice_wt'])}"
                     for run, row in r.items())


def _gpu(r: dict) -> str:
    return (f"{r['device']}: held-out Dice {_f(r['dice_anterior'])} / {_f(r['dice_posterior'])}, {r['iterations']:,} "
            f"iterations in {r['train_minutes']:g} min, {_f(r['predict_seconds_per_case'], 2)} s per case, peak GPU "
            f"{_f(r['peak_gpu_gib_train'], 2)} GiB training")


def _nnunet_interop(r: dict) -> str:
    return (f"voxseg {r['speedup_vs_nnunet']:g}x as fast as nnU-Net's own predictor ({r['speedup_first_run']:g}x in "
            f"its first run with a model, which converts the networks), peak RSS ratio {r['peak_rss_ratio']:g}, "
            f"label Dice against nnU-Net's at least {r['label_dice_min']:.4f} ({len(r['models'])} trained models)")


def _generic(r: dict) -> str:
    """Every top-level number or string of a result the pages do not know."""
    items = [f"{k} {v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{k} {v}"
             for k, v in r.items() if isinstance(v, (int, float, str))]
    return ", ".join(items) or "see the JSON file"


_HELD_OUT = ("Held-out cases: a seeded 20% by case, never seen in training, predicted through the full chain "
             "(NIfTI in, NIfTI in the input geometry out).")
_PAGES = {"datasets.md": "Datasets", "training.md": "Training", "prediction.md": "Prediction",
          "evaluation.md": "Evaluation", "recipes.md": "Recipes"}
BENCHMARKS: list[Benchmark] = [
    Benchmark("hippocampus", "python benchmarks/hippocampus.py", "held-out Dice on 2 CPU threads",
              "Trains the default pipeline on the hippocampus dataset (Medical Segmentation Decathlon Task04) on 2 CPU "
              "threads, for a 30-minute budget by default or exactly `--epochs N` x 100 iterations (with `--amp none` "
              "its figures then depend on the seed alone, not on the machine's speed: the command records which), "
              f"and scores the anterior and posterior hippocampus with flip TTA, and without. {_HELD_OUT}",
              "nnU-Net (Isensee et al. 2021) after full GPU training, as published (0.90 / 0.89; another split)",
              "training.md#cpu-gpu-or-several", _hippocampus),
    Benchmark("gpu", "python benchmarks/gpu.py", "hippocampus on one CUDA GPU",
              "Trains hippocampus on one CUDA GPU for a 5-minute budget (`--minutes`) and predicts the held-out cases "
              f"there: iterations, seconds per case, peak GPU memory and Dice (without a GPU it says so and stops). "
              f"{_HELD_OUT}", "the CPU rows of the hippocampus benchmark", "training.md#cpu-gpu-or-several", _gpu),
    Benchmark("time_budget", "python benchmarks/time_budget.py", "patch planned for a short budget",
              "Hippocampus with 2- and 5-minute budgets, twice each: the patch planned for memory alone, and the "
              f"patch shrunk until the budget holds `--min-iterations` timed steps. {_HELD_OUT}",
              "the memory-planned patch, same split and budget", "training.md#time-budget", _time_budget),
    Benchmark("memory_plan", "python benchmarks/memory_plan.py", "training-memory estimate",
              "voxseg's estimate of a training step's memory against the measured peak of real steps, for U-Nets of "
              "several widths, patches and batches, each in its own process.",
              "the measured peak", "training.md#memory", _memory_plan),
    Benchmark("anisotropic", "python benchmarks/anisotropic.py", "thick slices and mixed spacings",
              "Hippocampus cut to 1 x 1 x 4 mm slices: strides planned from the spacing, isotropic strides, 2-D and "
              "2.5-D, same budget; and with half its cases at 2 mm: resampled to nnU-Net's target or kept on each "
              f"case's own grid. {_HELD_OUT}",
              "the runs against each other, same split and budget", "datasets.md#spacing-and-resampling",
              _per_run_dice),
    Benchmark("variants", "python benchmarks/variants.py", "every 3-D network preset",
              "Every 3-D network preset trained for the same short budget on hippocampus (base width 16, Adam): "
              f"parameters, FLOPs, seconds per iteration and held-out Dice. {_HELD_OUT}",
              "the presets against each other, same budget", "training.md#networks-and-losses", _variants),
    Benchmark("loader", "python benchmarks/loader.py", "augmentation speed, data wait",
              "voxseg's augmentation against the equivalent MONAI chain (one thread each), and the share of a "
              "training step the model waits for batches from one loader worker, on BraTS and hippocampus.",
              "MONAI's chain in the same run", "training.md#augmentation-and-data-loading", _loader),
    Benchmark("cache_memory", "python benchmarks/cache_memory.py", "memory of the case cache",
              "Memory a training process holds for its cases: the memory-mapped cache against every case copied "
              "into RAM (phantoms, 400 patches drawn).", "the cases held in RAM", "training.md#the-run-folder",
              _cache_memory),
    Benchmark("inference", "python benchmarks/inference.py", "sliding-window speed and memory",
              "One BraTS-size case (4 x 240 x 240 x 155), the default 3-D U-Net with seeded random weights, 128^3 "
              "windows, overlap 0.5: voxseg's predict path against MONAI's `sliding_window_inference` with the same "
              "weights, each in its own process (time, peak RSS, label agreement, and controls).",
              "MONAI `sliding_window_inference` with a `DynUNet` holding the same weights, same run",
              "prediction.md#sliding-window", _inference),
    Benchmark("brats", "python benchmarks/brats.py", "BraTS regions in 60 CPU-minutes",
              "The BraTS region scheme (sigmoid WT / TC / ET) trained on 10 cases for 60 minutes on 2 CPU threads as "
              "`voxseg train DATA --label-scheme brats --time-budget 60` would: the planner chooses the spacing, "
              "optimiser, augmentation, N4 and network depth (its choices saved with the figures); 4 held-out cases "
              "predicted with 16-variant TTA.",
              "published GPU pipelines trained on hundreds of cases", "datasets.md#label-schemes-and-regions", _brats),
    Benchmark("brats_explicit", "python benchmarks/brats.py --explicit", "BraTS with explicit settings",
              "As `brats`, with the settings given on the command line instead of the planner's (by default 2 mm, "
              "64^3 patches, N4, Adam, full augmentation): the row the planner's choices are compared with.",
              "the `brats` row, same split and budget", "training.md#how-the-planner-chooses", _brats),
    Benchmark("hippocampus_explicit", "python benchmarks/hippocampus.py --explicit",
              "hippocampus with explicit settings",
              "As `hippocampus`, with the settings given on the command line instead of the planner's (by default "
              f"base width 16, depth 4, deep supervision, SGD, batch 2). {_HELD_OUT}",
              "the `hippocampus` row, same split and budget", "training.md#how-the-planner-chooses", _hippocampus),
    Benchmark("hippocampus_augment", "python benchmarks/hippocampus.py --augment default",
              "hippocampus with another augmentation",
              "As `hippocampus`, with the augmentation preset given on the command line (`--augment default`: the "
              "full chain) in place of the flips the planner chooses for this dataset; every other choice the "
              f"planner's (the preset ran is in the figures' plan). {_HELD_OUT}",
              "the `hippocampus` row, same split and budget", "training.md#how-the-planner-chooses", _hippocampus),
    Benchmark("hippocampus_batch4", "python benchmarks/hippocampus.py --explicit --batch-size 4 --row "
              "hippocampus_batch4", "hippocampus with batch 4",
              "As `hippocampus_explicit` (all 162 training cases, the last weights), with 4 patches per step instead "
              "of 2: on this CPU a patch costs about a sixth less in a step of 4, so the budget buys more patches but "
              f"fewer steps. {_HELD_OUT}",
              "the `hippocampus_explicit` row, same split and budget", "training.md#how-the-planner-chooses",
              _hippocampus),
    Benchmark("hippocampus_adam", "python benchmarks/hippocampus.py --explicit --optimizer adam --row "
              "hippocampus_adam", "hippocampus with Adam",
              "As `hippocampus_explicit` (all 162 training cases, the last weights), with Adam 1e-3 instead of SGD "
              f"0.01 (both with poly decay). {_HELD_OUT}",
              "the `hippocampus_explicit` row, same split and budget", "training.md#how-the-planner-chooses",
              _hippocampus),
    Benchmark("hippocampus_width32", "python benchmarks/hippocampus.py --net-args base_width=32 --row "
              "hippocampus_width32", "hippocampus with base width 32",
              "As `hippocampus` (the planner's choices), with a U-Net of base width 32 (nnU-Net's) instead of the CPU "
              "default 16, as `voxseg train DATA --time-budget 30 --net-args base_width=32` would: about three times "
              f"the cost per step, so a third of the iterations. {_HELD_OUT}",
              "the `hippocampus` row, same split and budget", "training.md#how-the-planner-chooses", _hippocampus),
    Benchmark("ibsr", "python benchmarks/ibsr.py", "brain tissue (IBSR18) in 30 CPU-minutes",
              "CSF, grey and white matter of IBSR18 trained as `voxseg train DATA --label-names CSF,GM,WM "
              "--time-budget 30` would, on 7 of its 10 labelled cases on 2 CPU threads; Dice and HD95 on the other 3 "
              "(a seeded split by case, never seen in training), the weights chosen by validation Dice.",
              "the tissue classes against each other; published GPU pipelines on IBSR18",
              "training.md#how-the-planner-chooses", _ibsr),
    Benchmark("ibsr_explicit", "python benchmarks/ibsr.py --val-fraction 0", "IBSR18 trained on every training case",
              "As `ibsr`, with the validation split given: `--val-fraction 0` trains on all 7 training cases and keeps "
              "the last weights (the `ibsr` row holds one of them back and keeps the best by its Dice).",
              "the `ibsr` row, same split and budget", "training.md#how-the-planner-chooses", _ibsr),
    Benchmark("ibsr_augment", "python benchmarks/ibsr.py --augment flips", "IBSR18 with another augmentation",
              "As `ibsr`, with the augmentation preset given on the command line (`--augment flips`: the planner "
              "chose the full chain for this dataset until commit dd176c9, flips since); every other choice the "
              "planner's (the preset run is in the figures' plan).",
              "the `ibsr` row, same split and budget", "training.md#how-the-planner-chooses", _ibsr),
    Benchmark("inference_trained", "python benchmarks/inference.py --run RUN --window 128",
              "sliding window with trained weights",
              "As `inference`, with the weights and preprocessing of a trained run (`--run`): the default 3-D U-Net "
              "(16.5 M parameters, 128^3 windows) trained on the 14 BraTS 2018 cases for 12 minutes, made with "
              "`voxseg train ../shared/data/brats2018 --out RUN --net-args base_width=32,deep_supervision=0 --patch "
              "64,64,64 --spacing none --no-n4 --augment flips --optimizer adam --batch-size 2 --iterations 20 "
              "--time-budget 12 --val-fraction 0 --threads 2` (weights that decide, so that label agreement means "
              "something; not a model to quote Dice for); MONAI gets voxseg's preprocessed volume padded to the whole "
              "extent.",
              "MONAI `sliding_window_inference`, same weights, same run", "prediction.md#sliding-window", _inference),
    Benchmark("window_placement", "python benchmarks/window_placement.py benchmarks/results/brats/run",
              "labels against window placement",
              "How much a trained BraTS run's labels change when the windows fall where a whole-volume inferer puts "
              "them (voxseg's crop against the whole extent), per held-out case, no TTA.",
              "the run against itself", "prediction.md#sliding-window", _window_placement),
    Benchmark("validation_backend", "python benchmarks/validation_backend.py", "validation through OpenVINO",
              "Validation during training through each backend (`--val-backend`): the default 3-D U-Net, seeded, "
              "validates 6 windows of 128^3 of a BraTS-size case three times, its weights moved between "
              "validations; OpenVINO converts the network again at each one, in memory.",
              "PyTorch on the same weights, same run", "training.md#time-budget", _validation_backend),
    Benchmark("nnunet_interop", "python benchmarks/nnunet_interop.py", "nnU-Net models, nnU-Net's predictor",
              "nnU-Net v2 models trained here with nnU-Net's own trainer (hippocampus: plain U-Net and ResEnc M; "
              "BraTS 2018 regions: plain U-Net; one epoch on fold 0) predicted on held-out cases by "
              "`nnUNetv2`'s predictor and by voxseg, same fold, same mirroring, 2 CPU threads each, each in its own "
              "process: seconds, peak RSS and the Dice between the two label maps per case.",
              "nnU-Net's own predictor (`nnUNetPredictor`, float32 on the CPU), same run",
              "prediction.md#nnu-net-models", _nnunet_interop),
    Benchmark("reproduce", "python benchmarks/reproduce.py", "the reports' systems on real data",
              "Every recipe of the five reports (Buchwald et al. 2022, Archit & Adilina 2022, Wang & Tang 2020, "
              "Henry et al. 2021, Yildiz et al. 2024) trained on the nearest real data here with a stated CPU "
              f"budget, its held-out Dice beside the report's own figures, one table per report. {_HELD_OUT}",
              "each report's own figures and claims", "recipes.md#how-close-each-comes", _reproduce),
]


def load_results(results_dir: Path) -> dict[str, dict]:
    """Every ``<results_dir>/*.json`` by name (the file name without ``.json``), sorted by name."""
    results = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise SystemExit(f"error: {path}: not a readable result file ({err})")
        if not isinstance(record, dict) or not isinstance(record.get("figures"), dict):
            raise SystemExit(f"error: {path}: not a result file of benchmarks/_results.py (no 'figures' object)")
        results[path.stem] = record
    return results


def headline(benchmark: Benchmark | None, figures: dict) -> str:
    """The headline line of ``figures``; the generic one when the benchmark is unknown or its figures lack a key."""
    if benchmark is not None:
        try:
            return benchmark.headline(figures)
        except (KeyError, TypeError, ValueError, AttributeError):
            pass
    return _generic(figures)


def _machine(machine: dict) -> str:
    text = f"{machine.get('cpu', 'unknown CPU')}, {machine.get('cores', '?')} cores"
    if machine.get("torch_threads"):
        text += f", {machine['torch_threads']} torch threads"
    if machine.get("torch"):
        text += f", torch {machine['torch']}"
    if machine.get("cpu_amp_auto"):
        text += f", --amp auto chose {machine['cpu_amp_auto']} on the CPU"
    return text + (f", GPU {machine['gpu']}" if machine.get("gpu") else ", no GPU")


def _topic_link(topic: str) -> str:
    """``training.md#time-budget`` -> ``[Training: time budget](training.md#time-budget)``."""
    page, _, anchor = topic.partition("#")
    label = _PAGES.get(page, page) + (f": {anchor.replace('-', ' ')}" if anchor else "")
    return f"[{label}]({topic})"


def _provenance(record: dict) -> list[str]:
    return [f"- command: `{record.get('command', '?')}`", f"- commit: `{record.get('commit', 'unknown')}`",
            f"- date (UTC): {record.get('date', '?')}", f"- machine: {_machine(record.get('machine') or {})}"]


def _section(benchmark: Benchmark, record: dict | None) -> list[str]:
    lines = [f"## {benchmark.name}", "", f"**{benchmark.title[0].upper()}{benchmark.title[1:]}.** {benchmark.measures}",
             "", f"Compared with: {benchmark.reference}. User guide: {_topic_link(benchmark.topic)}.",
             "", f"Command: `{benchmark.command}`", ""]
    if record is None:
        return lines + ["Current figure: not yet measured (run the command, then `python benchmarks/figures_page.py`).",
                        ""]
    return lines + [f"Current figure: {headline(benchmark, record['figures'])}.", "", *_provenance(record),
                    f"- all figures: [`benchmarks/results/{benchmark.name}.json`]"
                    f"(../benchmarks/results/{benchmark.name}.json)", ""]


def render_page(results: dict[str, dict]) -> str:
    """``docs/benchmarks.md`` for ``results`` (name -> saved record)."""
    lines = ["# Benchmarks", "",
             "<!-- Made by benchmarks/figures_page.py from benchmarks/results/*.json: edit those, not this page. -->",
             "",
             "Every script under `benchmarks/` prints a table and ends with a JSON line of its figures; it also saves "
             "that line, with its command line, git commit, date and machine, as `benchmarks/results/<name>.json`. "
             "`python benchmarks/figures_page.py` makes this page and the README's figures table from those files. "
             "Run a benchmark alone on its machine: the training benchmarks run for a time budget, so a busy machine "
             "trains fewer iterations and scores lower. Benchmarks that need real data read it from "
             "`../shared/data` (or `--data`) and stop with one line when it is absent.", "",
             "| benchmark | measures | current figure |", "|---|---|---|"]
    known = {b.name for b in BENCHMARKS}
    for b in BENCHMARKS:
        figure = headline(b, results[b.name]["figures"]) if b.name in results else "not yet measured"
        lines.append(f"| [{b.name}](#{b.name}) | {b.title} | {figure} |")
    lines.append("")
    for b in BENCHMARKS:
        lines += _section(b, results.get(b.name))
    extra = [name for name in results if name not in known]
    if extra:
        lines += ["## Other results", ""]
        for name in extra:
            lines += [f"### {name}", "", f"Figures: {headline(None, results[name]['figures'])}.", "",
                      *_provenance(results[name]), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def render_readme_block(results: dict[str, dict]) -> str:
    """The README's figures table, markers included."""
    lines = [START, "<!-- Made by benchmarks/figures_page.py from benchmarks/results/*.json; do not edit. -->", "",
             "| benchmark | what it measures | current figure |", "|---|---|---|"]
    for b in BENCHMARKS:
        link = f"[{b.name}](docs/benchmarks.md#{b.name})"
        if b.name in results:
            record = results[b.name]
            figure = f"{headline(b, record['figures'])} (commit `{record.get('commit', 'unknown')}`)"
        else:
            figure = f"not yet measured: `{b.command}`"
        lines.append(f"| {link} | {b.title} ([guide](docs/{b.topic})) | {figure} |")
    return "\n".join(lines + ["", END])


def replace_readme_block(readme: str, block: str) -> str:
    """``readme`` with the text from ``START`` to ``END`` (markers included) replaced by ``block``."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {START} ... {END} block")
    return readme[:start] + block + readme[end + len(END):]


def write_figures(results_dir: Path, page: Path, readme: Path, check: bool = False) -> list[Path]:
    """Write (or with ``check`` only compare) the benchmarks page and the README block; return the files that
    differ from what the results make (all written unless ``check``)."""
    results = load_results(results_dir)
    try:
        wanted = {Path(page): render_page(results),
                  Path(readme): replace_readme_block(Path(readme).read_text(), render_readme_block(results))}
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {readme}: {err}")
    stale = [path for path, text in wanted.items() if not path.exists() or path.read_text() != text]
    if not check:
        for path in stale:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(wanted[path])
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--page", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is out of date")
    args = parser.parse_args(argv)
    stale = write_figures(args.results, args.page, args.readme, check=args.check)
    for path in stale:
        print(f"{'out of date' if args.check else 'wrote'}: {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
