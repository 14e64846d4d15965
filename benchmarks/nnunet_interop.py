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
them, trains ``nnUNetTrainer_1epoch`` (250 iterations) on fold 0 for the plain U-Net and the ResEnc M preset
(hippocampus) and the plain U-Net (BraTS regions), then predicts the held-out cases. The trained models stay in
the work folder; nothing is committed. Quick mode only measures the pipelines on random weights (near-ties make
its label Dice a lower bound of what trained weights give).

The last line is a JSON object with speedup_vs_nnunet (total nnU-Net seconds / total voxseg seconds),
label_dice_min, peak_rss_ratio (voxseg / nnU-Net, the larger over models) and per-model figures.
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
    """Predict ``cases`` with ``method`` and write ``{case: seconds}`` plus the process's peak RSS (voxseg: also
    what ran its networks; its first case includes converting them and ``auto``'s measurement)."""
    import torch

    torch.set_num_threads(THREADS)
    out.mkdir(parents=True, exist_ok=True)
    seconds, ran = {}, "nnU-Net torch"
    if method == "nnunet":
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        predictor = nnUNetPredictor(tile_step_size=0.5, use_mirroring=mirror, perform_everything_on_device=False,
                                    device=torch.device("cpu"), verbose=False, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(model), (0,), "checkpoint_final.pth")
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
        for name, files in cases.items():
            start = time.perf_counter()
            predict_nnunet_case(loaded, nets, [Path(f) for f in files], out / f"{name}.nii.gz", mirror,
                                amp=amp, backend=engine, cache_dir=loaded.folder)
            seconds[name] = time.perf_counter() - start
        ran = ", ".join(sorted(set(engine.choices.values())))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB -> GiB
    (out / "timing.json").write_text(json.dumps({"seconds": seconds, "peak_rss_gib": peak, "ran": ran}))


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


def compare_model(venv_python: str, model: Path, cases: dict[str, list[str]], work: Path, amp: str = "auto",
                  mirror: bool = True, backend: str = "auto") -> dict:
    """Both methods on one model folder; per-case rows printed, totals returned."""
    import SimpleITK as sitk

    ref = _run_worker(venv_python, "nnunet", model, cases, work / "nnunet", mirror, amp)
    ours = _run_worker(sys.executable, "voxseg", model, cases, work / "voxseg", mirror, amp, backend)
    dices = {}
    for name in cases:
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "voxseg" / f"{name}.nii.gz")))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "nnunet" / f"{name}.nii.gz")))
        dices[name] = _dice(a, b)
        print(f"{model.parent.parent.name[:12] + '/' + model.parent.name[:11]:<26}{name:<22}{ref['seconds'][name]:>10.1f}{ours['seconds'][name]:>10.1f}"
              f"{dices[name]:>10.4f}  {ours['ran']}", flush=True)
    return {"nnunet_seconds": sum(ref["seconds"].values()), "voxseg_seconds": sum(ours["seconds"].values()),
            "nnunet_peak_rss_gib": ref["peak_rss_gib"], "voxseg_peak_rss_gib": ours["peak_rss_gib"],
            "label_dice_min": min(dices.values()), "voxseg_ran": ours["ran"]}


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


def full_models(work: Path, venv_python: str, held_out: int) -> list[tuple[Path, dict[str, list[str]]]]:
    """Convert, plan, preprocess and train with nnU-Net's own commands (see the module docstring)."""
    from _nnunet_raw import convert_brats, convert_hippocampus

    env = dict(os.environ, nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(work / "preprocessed"),
               nnUNet_results=str(work / "results"), nnUNet_def_n_proc=str(THREADS), nnUNet_n_proc_DA="2")
    bin_dir = Path(venv_python).parent
    runs = [(convert_hippocampus(work / "raw", held_out), "nnUNetPlans", "nnUNetTrainer_1epoch"),
            (None, "nnUNetResEncUNetMPlans", "nnUNetTrainer_1epoch"),
            (convert_brats(work / "raw", held_out), "nnUNetPlans", "nnUNetTrainer_1epoch")]
    models, last = [], None
    for dataset, plans, trainer in runs:
        dataset = dataset or last
        last = dataset
        planner = ["-pl", "nnUNetPlannerResEncM"] if plans != "nnUNetPlans" else []
        subprocess.run([str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", str(dataset.id), "-c", "3d_fullres",
                        "-np", str(THREADS), *planner], check=True, env=env)
        subprocess.run([str(bin_dir / "nnUNetv2_train"), str(dataset.id), "3d_fullres", "0", "-tr", trainer,
                        "-p", plans, "-device", "cpu"], check=True, env=env)
        folder = work / "results" / dataset.name / f"{trainer}__{plans}__3d_fullres"
        models.append((folder, dataset.test_cases))
    return models


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="store_true", help="build the nnU-Net environment and stop")
    parser.add_argument("--venv", type=Path, default=REPO.parent / "venv-nnunet")
    parser.add_argument("--quick", action="store_true", help="random-weight models, synthetic cases")
    parser.add_argument("--held-out", type=int, default=5, help="held-out cases per dataset (full mode)")
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
        models = quick_models(work) if args.quick else full_models(work, str(python), args.held_out)
        print(f"{'model':<26}{'case':<22}{'nnU-Net s':>10}{'voxseg s':>10}{'Dice':>10}  voxseg ran")
        figures = {str(m.relative_to(work)): compare_model(str(python), m, c, work / f"cmp{i}", args.amp,
                                                           backend=args.backend)
                   for i, (m, c) in enumerate(models)}
    return _report(figures, args)


def _report(figures: dict, args) -> int:
    from _results import save_result

    nn_total = sum(f["nnunet_seconds"] for f in figures.values())
    ours_total = sum(f["voxseg_seconds"] for f in figures.values())
    result = {"speedup_vs_nnunet": round(nn_total / ours_total, 3),
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
