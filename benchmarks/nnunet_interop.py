"""nnU-Net interop benchmark (issue 20): the same nnU-Net v2 model folders predicted by ``nnUNetv2``'s own predictor
and by ``voxseg predict``, same folds, same mirroring, 2 CPU threads each, each method in its own process (so its
peak RSS is its own), in the same run. Per case: seconds, peak RSS of the process, Dice between the two label maps.

Modes:
    python benchmarks/nnunet_interop.py --setup          # build the nnU-Net environment (once; needs the registry)
    python benchmarks/nnunet_interop.py --quick          # random-weight model folders, synthetic cases (minutes)
    ... [--amp auto|bf16|none]                           # voxseg's network precision (none: float32 as nnU-Net)
    ... [--backend auto|torch|openvino]                  # what runs voxseg's networks (auto: as voxseg predict)
    python benchmarks/nnunet_interop.py                  # models trained with nnU-Net's own trainer (long)

``--setup`` makes a virtual environment (``--venv``, default ``../venv-nnunet`` beside the checkout) that sees
this machine's packages, installs ``nnunetv2`` with torch pinned to the installed CPU build, and removes the
torchvision it pulls (PyPI's build does not load with the CPU torch; nnU-Net's training and prediction run without
it). Full mode converts hippocampus (Decathlon Task04, ../shared/data/hippocampus) and BraTS 2018
(../shared/data/brats2018, regions WT/TC/ET) to nnU-Net's raw format with held-out cases, plans and preprocesses
them, trains ``nnUNetTrainer`` for one epoch on fold 0 (``FULL_MODELS``: the plain U-Net and the ResEnc M preset
on hippocampus, the plain U-Net on BraTS regions), then predicts the held-out cases. The trained models stay in
the work folder (``--work``; a later run with the same folder reuses them); nothing is committed. Quick mode only
measures the pipelines on random weights (near-ties make its label Dice a lower bound of what trained weights give).

voxseg predicts each model twice, each time in a fresh process: its first run with a model folder converts the
networks (OpenVINO) and measures ``--backend auto``'s choice during its first case; later runs read both from the
folder's cache. The last line is a JSON object with speedup_vs_nnunet (nnU-Net's total seconds over voxseg's, later
runs; totals include each method's setup), speedup_first_run (the same with voxseg's first run), label_dice_min,
peak_rss_ratio (voxseg / nnU-Net, the larger over models and runs) and per-model figures.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
THREADS = 2


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def setup(venv: Path) -> None:
    """Create the nnU-Net environment: system packages visible, torch pinned, torchvision removed."""
    import torch

    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    pin = venv / "torch-constraint.txt"
    pin.write_text(f"torch=={torch.__version__.split('+')[0]}\n")
    pip = [str(_venv_python(venv)), "-m", "pip"]
    subprocess.run(pip + ["install", "nnunetv2", "-c", str(pin)], check=True)
    subprocess.run(pip + ["uninstall", "-y", "torchvision"], check=False)
    subprocess.run([str(_venv_python(venv)), "-c", "import nnunetv2.inference.predict_from_raw_data"], check=True)


# -- workers (one process per method and model) ---------------------------------------------------------------

def _worker(method: str, model: Path, cases: dict[str, list[str]], out: Path, mirror: bool, amp: str,
            backend: str = "auto") -> None:
    """Predict ``cases`` with ``method`` and write ``{case: seconds}``, the seconds of setting up (reading the model
    folder and its weights), the process's peak RSS and, for voxseg, what ran its networks. voxseg converts its
    networks and measures ``auto``'s choice in its first case, unless the model folder's cache holds them."""
    import torch

    torch.set_num_threads(THREADS)
    out.mkdir(parents=True, exist_ok=True)
    seconds, ran, start = {}, "nnU-Net torch fp32", time.perf_counter()
    if method == "nnunet":
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        predictor = nnUNetPredictor(tile_step_size=0.5, use_mirroring=mirror, perform_everything_on_device=False,
                                    device=torch.device("cpu"), verbose=False, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(model), (0,), "checkpoint_final.pth")
        setup_seconds = time.perf_counter() - start
        for name, files in cases.items():
            start = time.perf_counter()
            predictor.predict_from_files_sequential([files], [str(out / name)], False, True, None)
            seconds[name] = time.perf_counter() - start
    else:
        from voxseg.infer import InferenceBackend
        from voxseg.infer.nnunet import load_nnunet_model, load_nnunet_networks, predict_nnunet_case

        loaded = load_nnunet_model(model, "0", "final")
        nets = load_nnunet_networks(loaded)
        engine = InferenceBackend(backend)
        setup_seconds = time.perf_counter() - start
        for name, files in cases.items():
            start = time.perf_counter()
            predict_nnunet_case(loaded, nets, [Path(f) for f in files], out / f"{name}.nii.gz", mirror,
                                amp=amp, backend=engine, cache_dir=loaded.folder)
            seconds[name] = time.perf_counter() - start
        ran = ", ".join(sorted(set(engine.choices.values())))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB -> GiB
    (out / "timing.json").write_text(json.dumps({"seconds": seconds, "setup_seconds": setup_seconds,
                                                 "peak_rss_gib": peak, "ran": ran}))


def _run_worker(python: str, method: str, model: Path, cases: dict, out: Path, mirror: bool, amp: str,
                backend: str = "auto") -> dict:
    env = dict(os.environ, nnUNet_def_n_proc=str(THREADS), OMP_NUM_THREADS=str(THREADS))
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env.setdefault(name, str(out))
    if method == "voxseg":
        env["PYTHONPATH"] = str(REPO)
    out.parent.mkdir(parents=True, exist_ok=True)
    spec = out.parent / f"{method}_cases.json"
    spec.write_text(json.dumps(cases))
    subprocess.run([python, __file__, "--worker", method, str(model), str(spec), str(out), str(int(mirror)), amp,
                    backend],
                   check=True, env=env)
    return json.loads((out / "timing.json").read_text())


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Dice over the labels present in either map (1.0 when both are empty)."""
    labels = [v for v in np.union1d(np.unique(a), np.unique(b)) if v != 0]
    if not labels:
        return 1.0
    return float(np.mean([2 * np.sum((a == v) & (b == v)) / (np.sum(a == v) + np.sum(b == v)) for v in labels]))


def _total(timing: dict) -> float:
    return timing["setup_seconds"] + sum(timing["seconds"].values())


def compare_model(venv_python: str, model: Path, cases: dict[str, list[str]], work: Path, amp: str = "auto",
                  mirror: bool = True, backend: str = "auto") -> dict:
    """Both methods on one model folder; per-case rows printed, totals returned.

    voxseg runs twice, each in a fresh process: first with the model folder's cache of converted networks
    removed (a user's first run with the model: conversion and ``auto``'s measurement in its first case), then
    with the cache that run left (every later run). Totals include each method's setup."""
    import shutil

    import SimpleITK as sitk

    ref = _run_worker(venv_python, "nnunet", model, cases, work / "nnunet", mirror, amp)
    shutil.rmtree(model / ".cache", ignore_errors=True)
    first = _run_worker(sys.executable, "voxseg", model, cases, work / "voxseg_first", mirror, amp, backend)
    ours = _run_worker(sys.executable, "voxseg", model, cases, work / "voxseg", mirror, amp, backend)
    dices = {}
    label = model.parent.name[:12] + "/" + model.name.split("__")[1][:13]
    for name in cases:
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "voxseg" / f"{name}.nii.gz")))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "nnunet" / f"{name}.nii.gz")))
        dices[name] = _dice(a, b)
        print(f"{label:<27}{name[-16:]:<17}{ref['seconds'][name]:>10.2f}{first['seconds'][name]:>10.2f}"
              f"{ours['seconds'][name]:>10.2f}{dices[name]:>9.4f}  {ours['ran']}", flush=True)
    print(f"{label:<27}{'setup':<17}{ref['setup_seconds']:>10.2f}{first['setup_seconds']:>10.2f}"
          f"{ours['setup_seconds']:>10.2f}", flush=True)
    return {"nnunet_seconds": _total(ref), "voxseg_seconds": _total(ours), "voxseg_first_run_seconds": _total(first),
            "nnunet_case_seconds_median": float(np.median(list(ref["seconds"].values()))),
            "voxseg_case_seconds_median": float(np.median(list(ours["seconds"].values()))),
            "nnunet_peak_rss_gib": ref["peak_rss_gib"],
            "voxseg_peak_rss_gib": max(ours["peak_rss_gib"], first["peak_rss_gib"]),
            "label_dice_min": min(dices.values()), "cases": len(cases), "voxseg_ran": ours["ran"]}


# -- model folders -------------------------------------------------------------------------------------------

def quick_models(work: Path) -> list[tuple[Path, dict[str, list[str]]]]:
    """Random-weight folders (plain softmax and plain regions, a 4-stage U-Net, window 32x48x40) and one
    synthetic case each."""
    sys.path[:0] = [str(REPO), str(REPO / "tests")]
    from nnunet_fixtures import make_model_folder, save_checkpoint, write_case

    from voxseg.infer.nnunet import build_nnunet_network

    models = []
    for regions in (False, True):
        root = work / ("regions" if regions else "plain")
        folder = make_model_folder(root / "model", regions=regions, patch=(32, 48, 40), spacing=(1.0, 1.0, 1.0))
        plans = json.loads((folder / "plans.json").read_text())
        config = plans["configurations"]["3d_fullres"]
        config["architecture"]["arch_kwargs"].update(
            n_stages=4, features_per_stage=[16, 32, 64, 128], kernel_sizes=[[3, 3, 3]] * 4,
            strides=[[1, 1, 1]] + [[2, 2, 2]] * 3, n_conv_per_stage=[2] * 4, n_conv_per_stage_decoder=[2] * 3)
        (folder / "plans.json").write_text(json.dumps(plans))
        dataset = json.loads((folder / "dataset.json").read_text())
        net = build_nnunet_network(config["architecture"], 1, 3)
        save_checkpoint(folder / "fold_0" / "checkpoint_final.pth", net.state_dict(), plans, "3d_fullres", 0,
                        dataset, (0, 1, 2))
        cases = {}
        for i in range(1):
            files = write_case(root / "in", f"case{i}", shape=(50, 70, 60), spacing=(1.2, 0.9, 1.1), seed=i)
            cases[f"case{i}"] = [str(f) for f in files]
        models.append((folder, cases))
    return models


_TRAIN = """
import json, os, sys, torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
torch.set_num_threads(int(sys.argv[4]))
folder = os.path.join(os.environ["nnUNet_preprocessed"], maybe_convert_to_dataset_name(int(sys.argv[1])))
plans = json.load(open(os.path.join(folder, sys.argv[2] + ".json")))
config = plans["configurations"]["3d_fullres"]
config["batch_size"] = min(config["batch_size"], int(sys.argv[5]))
plans["continue_training"] = False
trainer = nnUNetTrainer(plans, "3d_fullres", 0, json.load(open(os.path.join(folder, "dataset.json"))),
                        device=torch.device("cpu"))
trainer.num_epochs, trainer.num_iterations_per_epoch = 1, int(sys.argv[3])
trainer.num_val_iterations_per_epoch = max(1, int(sys.argv[3]) // 10)
if sys.argv[6] != "-":  # go on from these weights (a fresh optimiser; one epoch's learning rate is constant)
    trainer.initialize()
    trainer.network.load_state_dict(torch.load(sys.argv[6], map_location="cpu", weights_only=False)["network_weights"])
trainer.run_training()
"""

FULL_MODELS = {  # name: (dataset, plans identifier, planner, training iterations, largest batch)
    "hippocampus": ("hippocampus", "nnUNetPlans", None, 250, 7),
    "hippocampus_resenc": ("hippocampus", "nnUNetResEncUNetMPlans", "nnUNetPlannerResEncM", 500, 7),
    "brats": ("brats", "nnUNetPlans", None, 50, 2),
}
"""Full mode's models: nnU-Net's own trainer (``nnUNetTrainer``, its losses, augmentation and schedule) for one
epoch of the given iterations on fold 0, the plans' batch capped (ResEnc M plans 58 hippocampus patches, for a
GPU's memory); sized for 2 CPU cores (hippocampus 250 iterations of 7 = nnU-Net's epoch, about 28 minutes; ResEnc
M, about 11 s an iteration, still predicts background only after 100 and reaches a pseudo Dice of 0.52 / 0.15 after
250, so it trains 500: near-tied voxels of a barely trained model are where bf16 and float32 labels part). The batch
is training's alone: prediction runs one window at a time either way."""


_ITERATIONS = "benchmark_iterations.json"


def _trained_iterations(folder: Path) -> int:
    """Iterations the benchmark trained ``folder``'s fold 0 for (0: not trained)."""
    record = folder / "fold_0" / _ITERATIONS
    if not (folder / "fold_0" / "checkpoint_final.pth").exists() or not record.exists():
        return 0
    return int(json.loads(record.read_text())["iterations"])


def full_models(work: Path, venv_python: str, held_out: int, brats_held_out: int,
                names: list[str]) -> list[tuple[Path, dict[str, list[str]]]]:
    """Convert, plan, preprocess and train with nnU-Net's own code (see the module docstring); a model whose
    ``checkpoint_final.pth`` in ``work`` has its iterations is reused, so a second run only predicts; one trained for
    fewer goes on from its weights."""
    from _nnunet_raw import convert_brats, convert_hippocampus

    env = dict(os.environ, nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(work / "preprocessed"),
               nnUNet_results=str(work / "results"), nnUNet_def_n_proc=str(THREADS), nnUNet_n_proc_DA="2")
    bin_dir = Path(venv_python).parent
    converted, models = {}, []
    for name in names:
        source, plans, planner, iterations, batch = FULL_MODELS[name]
        if source not in converted:
            converted[source] = (convert_hippocampus(work / "raw", held_out) if source == "hippocampus"
                                 else convert_brats(work / "raw", brats_held_out))
        dataset = converted[source]
        folder = work / "results" / dataset.name / f"nnUNetTrainer__{plans}__3d_fullres"
        done = _trained_iterations(folder)
        if done < iterations:
            if not (work / "preprocessed" / dataset.name / f"{plans}.json").exists():
                subprocess.run([str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", str(dataset.id), "-c",
                                "3d_fullres", "-np", str(THREADS), *(["-pl", planner] if planner else [])],
                               check=True, env=env)
            print(f"training {name}: nnUNetTrainer, iterations {done + 1}-{iterations} (batch at most {batch}) on "
                  f"fold 0", flush=True)
            weights = folder / "fold_0" / "checkpoint_final.pth"
            subprocess.run([venv_python, "-c", _TRAIN, str(dataset.id), plans, str(iterations - done), str(THREADS),
                            str(batch), str(weights) if done else "-"], check=True, env=env)
            (folder / "fold_0" / _ITERATIONS).write_text(json.dumps({"iterations": iterations}))
        models.append((folder, dataset.test_cases))
    return models


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="store_true", help="build the nnU-Net environment and stop")
    parser.add_argument("--venv", type=Path, default=REPO.parent / "venv-nnunet")
    parser.add_argument("--quick", action="store_true", help="random-weight models, synthetic cases")
    parser.add_argument("--held-out", type=int, default=5, help="held-out hippocampus cases (full mode)")
    parser.add_argument("--brats-held-out", type=int, default=2, help="held-out BraTS cases (full mode)")
    parser.add_argument("--models", default=",".join(FULL_MODELS),
                        help=f"full mode's models, comma-separated (of {', '.join(FULL_MODELS)})")
    parser.add_argument("--train-only", action="store_true", help="full mode: train the models into --work, stop")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--amp", choices=["auto", "bf16", "none"], default="auto",
                        help="voxseg's network precision (none: float32 as nnU-Net)")
    parser.add_argument("--backend", choices=["auto", "torch", "openvino"], default="auto",
                        help="what runs voxseg's networks (auto: OpenVINO where it measures faster, as voxseg predict)")
    parser.add_argument("--worker", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        method, model, spec, out, mirror, amp, backend = args.worker
        _worker(method, Path(model), json.loads(Path(spec).read_text()), Path(out), mirror == "1", amp, backend)
        return 0
    if args.setup:
        setup(args.venv)
        return 0
    python = _venv_python(args.venv)
    if not python.exists():
        print(f"error: no nnU-Net environment at {args.venv}; run with --setup first", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        names = [n.strip() for n in args.models.split(",") if n.strip()]
        if any(n not in FULL_MODELS for n in names):
            print(f"error: --models takes {', '.join(FULL_MODELS)}", file=sys.stderr)
            return 2
        models = (quick_models(work) if args.quick
                  else full_models(work, str(python), args.held_out, args.brats_held_out, names))
        if args.train_only:
            return 0
        print(f"{'model':<27}{'case':<17}{'nnU-Net s':>10}{'first s':>10}{'voxseg s':>10}{'Dice':>9}  voxseg ran"
              "\n(seconds per case; voxseg's first run converts its networks, later runs read them from the model "
              "folder)")
        figures = {str(m.relative_to(work)): compare_model(str(python), m, c, work / f"cmp{i}", args.amp,
                                                           backend=args.backend)
                   for i, (m, c) in enumerate(models)}
    return _report(figures, args)


def _report(figures: dict, args) -> int:
    from _results import save_result

    nn_total = sum(f["nnunet_seconds"] for f in figures.values())
    ours_total = sum(f["voxseg_seconds"] for f in figures.values())
    first_total = sum(f["voxseg_first_run_seconds"] for f in figures.values())
    result = {"speedup_vs_nnunet": round(nn_total / ours_total, 3),
              "speedup_first_run": round(nn_total / first_total, 3),
              "label_dice_min": round(min(f["label_dice_min"] for f in figures.values()), 5),
              "peak_rss_ratio": round(max(f["voxseg_peak_rss_gib"] / f["nnunet_peak_rss_gib"]
                                          for f in figures.values()), 3),
              "quick": bool(args.quick), "threads": THREADS, "amp": args.amp,
              "backend": args.backend, "models": figures}
    if not args.quick:  # quick figures (random weights) are a smoke test, not a result
        save_result("nnunet_interop", result, sys.argv)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
