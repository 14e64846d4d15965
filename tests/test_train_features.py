"""Training features: exact resume, k-fold cross-validation with out-of-fold evaluation, transfer
learning (init, re-head, freeze/unfreeze), and DDP with 2 CPU processes (gloo)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from voxseg.data.phantoms import make_phantom_dataset
from voxseg.config import NetworkConfig, RunPlan, TrainConfig, TrainOptions
from voxseg.runs import kfold_splits, run_training


def _options(net_kwargs: dict | None = None, folds: int | None = None, label_scheme: str | None = None, **train):
    """A tiny run; ``train``: TrainConfig fields."""
    train = {"patch_size": [16, 16, 16], "epochs": 2, "iterations_per_epoch": 2, "num_threads": 1,
             "val_fraction": 0.25, **train}
    return TrainOptions(network=NetworkConfig(kwargs=net_kwargs or {"base_width": 4, "depth": 3}),
                        train=TrainConfig(**train), folds=folds, label_scheme=label_scheme)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return make_phantom_dataset(tmp_path_factory.mktemp("ph") / "ds", n_cases=4, shape=(20, 24, 20), seed=5)


def _weights(run):
    return torch.load(run / "checkpoint_last.pt", weights_only=False)["model"]


def test_resume_after_a_kill_reproduces_the_uninterrupted_run_bit_for_bit(phantoms, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    run_training(phantoms, straight, _options(epochs=3), progress=False)

    import voxseg.train.loop as loop

    real_write = loop.write_checkpoint

    def write_then_die(path, model, optimizer, state, parts):  # killed during epoch 3, after epoch 2's checkpoint
        real_write(path, model, optimizer, state, parts)
        if state.epoch == 2:
            raise KeyboardInterrupt

    killed = tmp_path / "killed"
    monkeypatch.setattr(loop, "write_checkpoint", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_training(phantoms, killed, _options(epochs=3), progress=False)
    monkeypatch.setattr(loop, "write_checkpoint", real_write)
    assert torch.load(killed / "checkpoint_last.pt", weights_only=False)["epoch"] == 2
    run_training(phantoms, killed, _options(), resume=True, progress=False)
    a, b = _weights(straight), _weights(killed)
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def test_kfold_splits_partition_cases():
    ids = [f"c{i}" for i in range(10)]
    splits = kfold_splits(ids, 3, seed=1)
    vals = [i for s in splits for i in s["val"]]
    assert sorted(vals) == sorted(ids)
    for s in splits:
        assert not set(s["val"]) & set(s["train"])
        assert sorted(s["val"] + s["train"]) == sorted(ids)
    assert kfold_splits(ids, 3, seed=1) == splits
    with pytest.raises(ValueError):
        kfold_splits(ids, 11, seed=1)


def test_cross_validation_trains_every_fold_and_evaluates_out_of_fold(phantoms, tmp_path):
    run = tmp_path / "cv"
    run_training(phantoms, run, _options(folds=2, epochs=1), progress=False)
    assert not (run / "oof").exists()  # training alone does not evaluate
    from voxseg.metrics import evaluate_cross_validation

    evaluate_cross_validation(phantoms, run, progress=False)
    splits = json.loads((run / "splits.json").read_text())
    assert len(splits) == 2
    for k in range(2):
        assert (run / f"fold_{k}" / "checkpoint_best.pt").exists()
        assert json.loads((run / f"fold_{k}" / "split.json").read_text()) == splits[k]
    summary = json.loads((run / "oof" / "metrics_summary.json").read_text())
    assert summary["summary"]["n_cases"] == 4  # every case once, by the fold that did not train on it
    _check_each_case_predicted_by_the_fold_that_held_it_out(phantoms, run, splits)
    from voxseg.report import write_report

    page = write_report(run / "report.html", run).read_text()
    assert "<h3>fold_0</h3>" in page and "<h3>fold_1</h3>" in page and 'id="oof"' in page
    assert page.count("<tr><td>fold ") == 2  # the data section lists both folds' splits


def _check_each_case_predicted_by_the_fold_that_held_it_out(phantoms, run, splits):
    """Counting cases cannot tell a fold that predicts its held-out cases from one that predicts its own
    training cases (with 2 folds both give every case once). Make each fold's model answer with its own label
    (fold k: class k + 1 everywhere, by zero head weights and a one-hot head bias), predict out of fold again,
    and read in every prediction which fold made it."""
    import nibabel as nib
    import numpy as np

    from voxseg.infer import read_checkpoint_file
    from voxseg.io import load_dataset
    from voxseg.metrics import out_of_fold_evaluation

    label_values = RunPlan.load(run / "plan.json").label_values  # [0, 1, 2, 4]
    for k in range(len(splits)):
        for name in ("checkpoint_best.pt", "checkpoint_last.pt"):
            checkpoint = read_checkpoint_file(run / f"fold_{k}" / name)
            for key, value in checkpoint["model"].items():
                if key.startswith("heads."):  # every deep-supervision head, the full-resolution one included
                    value.zero_()
                    if key.endswith(".bias"):
                        value[k + 1] = 10.0
            torch.save(checkpoint, run / f"fold_{k}" / name)
    out_of_fold_evaluation(load_dataset(phantoms), run, splits, progress=False, log=lambda _: None)
    for k, split in enumerate(splits):
        for case in split["val"]:
            pred = np.asarray(nib.load(run / "oof" / "pred" / f"{case}.nii.gz").dataobj)
            assert set(np.unique(pred)) == {0, label_values[k + 1]}, (case, k)  # (0: outside the brain's crop)


def test_transfer_learning_loads_matching_weights_and_freezes(phantoms, tmp_path):
    source = tmp_path / "source"
    run_training(phantoms, source, _options(epochs=1), progress=False)
    target = tmp_path / "target"
    # A different label scheme changes the head (3 sigmoid regions instead of 4 classes): it stays random.
    run_training(phantoms, target, _options(epochs=2, init_from=str(source), freeze_stages=1, label_scheme="brats"),
                 progress=False)
    src, dst = _weights(source), _weights(target)
    frozen = [k for k in src if k.startswith("encoder_stages.0.") and k in dst]
    assert frozen, "the first encoder stage should exist in both"
    for key in frozen:  # frozen: unchanged by two epochs of training
        assert torch.equal(src[key], dst[key]), key
    trained = [k for k in src if k.startswith("encoder_stages.1.") and src[k].dtype.is_floating_point
               and src[k].shape == dst[k].shape]
    assert any(not torch.equal(src[k], dst[k]) for k in trained)
    head_keys = [k for k in dst if k.startswith("heads.")]
    assert any(src.get(k) is None or src[k].shape != dst[k].shape for k in head_keys)


@pytest.fixture(scope="module")
def ddp_runs(phantoms, tmp_path_factory):
    """One torchrun launch (2 CPU processes, gloo) that trains both DDP variants: {variant: folder}."""
    out = tmp_path_factory.mktemp("ddp")
    worker = Path(__file__).parent / "helpers" / "ddp_worker.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           str(worker), str(phantoms), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"plain": out / "plain", "deep_supervision": out / "deep_supervision"}


# deep supervision: its coarsest head has weight 0, unused in a step
@pytest.mark.parametrize("variant", ["plain", "deep_supervision"])
def test_ddp_two_cpu_processes_keep_identical_weights(ddp_runs, variant):
    folder = ddp_runs[variant]
    a = torch.load(folder / "rank0.pt")
    b = torch.load(folder / "rank1.pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (folder / "run" / "checkpoint_last.pt").exists()
    log = (folder / "run" / "log.csv").read_text().splitlines()
    assert len(log) == 3  # one writer: header + 2 epochs, not doubled


def test_swa_phase_averages_snapshots_into_its_own_checkpoint(phantoms, tmp_path):
    run = tmp_path / "swa"
    result = run_training(phantoms, run, _options(epochs=1, swa_epochs=2, swa_every_k_epochs=1),
                          progress=False)
    assert result.epochs_done == 3
    swa = torch.load(run / "checkpoint_swa.pt", weights_only=False)
    assert swa["n_averaged"] == 2
    last = _weights(run)
    assert any(not torch.equal(swa["model"][k], last[k]) for k in last if last[k].dtype.is_floating_point)
    # A phase shorter than the snapshot interval (2 epochs, every 3 by default) still ends averaged.
    short = tmp_path / "short"
    run_training(phantoms, short, _options(epochs=1, swa_epochs=2), progress=False)
    assert torch.load(short / "checkpoint_swa.pt", weights_only=False)["n_averaged"] == 1


def test_early_stopping_ends_the_run(phantoms, tmp_path):
    # min_delta 1.0: no Dice can improve by a whole point, so the second validation stops the run.
    result = run_training(phantoms, tmp_path / "es", _options(
        epochs=6, early_stopping_patience=1, early_stopping_min_delta=1.0), progress=False)
    assert result.stopped_by == "early stopping"
    assert result.epochs_done == 2


@pytest.mark.parametrize("optimizer,schedule", [("ranger", "flat_cosine"), ("adamw", "cosine"), ("radam", "poly")])
def test_optimisers_and_schedules_train(phantoms, tmp_path, optimizer, schedule):
    result = run_training(phantoms, tmp_path / optimizer, _options(
        epochs=1, optimizer=optimizer, lr=1e-3, schedule=schedule), progress=False)
    plan = RunPlan.load(tmp_path / optimizer / "plan.json")
    assert plan.train.optimizer == optimizer and plan.train.schedule == schedule
    assert result.iterations == 2


def test_a_budget_too_short_for_training_is_said_with_its_projection(phantoms, tmp_path, monkeypatch):
    import voxseg.train.phases as phases

    said = []
    # Any machine runs the tiny network more than 200 times in 2 s; raise the bar so the warning must fire.
    monkeypatch.setattr(phases, "FEW_ITERATIONS", 10 ** 9)
    run_training(phantoms, tmp_path / "short", _options(epochs=1000, time_budget_minutes=2 / 60), progress=False,
                 log=said.append)
    warnings = [line for line in said if line.startswith("warning:")]
    assert len(warnings) == 1 and "s per iteration" in warnings[0], said
    projected = int(warnings[0].split("allows about ")[1].split()[0])
    ran = int(said[-1].split("(")[1].split()[0])  # "stopped by time budget after E epochs (N iterations), ..."
    assert said[-1].startswith("stopped by time budget") and ran / 3 <= projected <= 3 * ran + 10, said[-1]
    # Budgeted by epochs only, or with time to spare (the real threshold): nothing to warn about.
    monkeypatch.undo()
    said.clear()
    run_training(phantoms, tmp_path / "epochs", _options(), progress=False, log=said.append)
    run_training(phantoms, tmp_path / "long", _options(time_budget_minutes=60), progress=False, log=said.append)
    assert not [line for line in said if line.startswith("warning:")], said


def test_cpu_defaults_fill_only_what_the_user_left_open(phantoms, tmp_path, monkeypatch):
    from voxseg.plan import CPU_DEFAULTS

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    said = []
    options = TrainOptions(train=TrainConfig(epochs=1, iterations_per_epoch=1, num_threads=1, val_fraction=0.25))
    run_training(phantoms, tmp_path / "cpu", options, progress=False, log=said.append)
    plan = RunPlan.load(tmp_path / "cpu" / "plan.json")
    planned_depth = {k: v for k, v in plan.network.kwargs.items() if k == "depth"}  # the depth rule, for small cases
    assert plan.network.kwargs == {**CPU_DEFAULTS["unet_kwargs"], **planned_depth}
    assert any(n.startswith("network depth") for n in plan.planner_notes) == bool(planned_depth)
    assert math.prod(plan.train.patch_size) <= CPU_DEFAULTS["max_patch_voxels"]
    assert any(line.startswith("CPU defaults: base_width=16, deep_supervision=True") for line in said), said
    # What the user sets stays; other presets keep their paper's widths.
    run_training(phantoms, tmp_path / "own", _options(net_kwargs={"base_width": 4, "depth": 3,
                                                                  "deep_supervision": False}), progress=False)
    assert RunPlan.load(tmp_path / "own" / "plan.json").network.kwargs == {"base_width": 4, "depth": 3,
                                                                            "deep_supervision": False}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # planning only: nothing runs on the GPU here
    from voxseg.plan import hardware_defaults

    kwargs, cap, note = hardware_defaults(TrainOptions())
    assert kwargs == {} and cap == 96 * 96 * 64 and note == ""


def test_a_patch_larger_than_every_case_is_said(phantoms, tmp_path):
    said = []
    run_training(phantoms, tmp_path / "big", _options(patch_size=[32, 16, 16], epochs=1, iterations_per_epoch=1),
                 progress=False, log=said.append)
    warned = [line for line in said if line.startswith("warning: patch [32, 16, 16]")]
    assert len(warned) == 1 and "along z " in warned[0], said
    said.clear()
    run_training(phantoms, tmp_path / "fits", _options(epochs=1, iterations_per_epoch=1), progress=False,
                 log=said.append)
    assert not [line for line in said if line.startswith("warning: patch")]


def test_one_non_finite_loss_skips_its_step_instead_of_ruining_the_weights(phantoms, tmp_path, monkeypatch):
    """A batch whose loss is NaN (here: the second step's) must not reach the weights: its step is skipped,
    training goes on, the weights stay finite and the epoch's logged loss is that of the finite steps."""
    import voxseg.train.loop as loop

    real = loop.build_loss

    def build_with_one_nan(*args, **kwargs):
        loss_fn, calls = real(*args, **kwargs), []

        def loss(out, y):
            calls.append(1)
            value = loss_fn(out, y)
            return value * float("nan") if len(calls) == 2 else value
        return loss

    monkeypatch.setattr(loop, "build_loss", build_with_one_nan)
    lines: list[str] = []
    run_training(phantoms, tmp_path / "run", _options(epochs=2, iterations_per_epoch=3, val_fraction=0.0),
                 progress=False, log=lines.append)
    assert any(line.startswith("warning: 1 step(s) skipped: their loss or gradients were not finite") for line in lines)
    assert all(torch.isfinite(v).all() for v in _weights(tmp_path / "run").values() if v.is_floating_point())
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]
    assert len(rows) == 2 and all(math.isfinite(float(r.split(",")[3])) for r in rows)
