"""Planning for a time budget: a timed training step, and the patch shrunk until the budget holds enough steps."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from voxseg.data.phantoms import make_phantom_dataset
from voxseg.nets import build_network
from voxseg.config import NetworkConfig, RunPlan, TrainConfig
from voxseg.runs import TrainOptions, run_training
from voxseg.plan.timing import fit_patch_to_time_budget, measure_step_seconds
from voxseg.train.phases import replanned_patch


def _per_voxel(seconds_per_voxel: float, calls: list):
    def measure(side: list[int]) -> float:
        calls.append(list(side))
        return seconds_per_voxel * math.prod(side)
    return measure


def test_the_patch_shrinks_longest_axis_first_until_the_budget_holds_the_steps():
    calls = []
    # 1e-6 s per voxel: 64^3 -> 0.26 s per step, 100 s hold 381 steps; 1,000 need <= 0.1 s = 100,000 voxels.
    patch, seconds = fit_patch_to_time_budget(None, 1, [64, 64, 64], 2, 100.0, 1000, [16, 16, 16],
                                              measure=_per_voxel(1e-6, calls))
    assert calls[0] == [64, 64, 64]
    assert calls[1:4] == [[48, 64, 64], [48, 48, 64], [48, 48, 48]]  # longest axis first (ties: the first)
    assert math.prod(patch) <= 100_000 and 100.0 / seconds >= 1000
    assert calls[-1] == patch and math.prod(calls[-2]) > 100_000  # the first patch that fits, no smaller
    assert seconds == pytest.approx(1e-6 * math.prod(patch))


def test_a_budget_that_already_fits_keeps_the_patch_and_an_impossible_one_stops_at_the_floor():
    calls = []
    assert fit_patch_to_time_budget(None, 1, [64, 64, 64], 2, 1000.0, 100, [16, 16, 16],
                                    measure=_per_voxel(1e-6, calls))[0] == [64, 64, 64]
    assert len(calls) == 1
    patch, _ = fit_patch_to_time_budget(None, 1, [64, 64, 64], 2, 1.0, 10**9, [16, 16, 16],
                                        measure=_per_voxel(1e-6, []))
    assert patch == [32, 32, 32]  # min_side 32
    patch, _ = fit_patch_to_time_budget(None, 1, [1, 96, 80], 2, 1.0, 10**9, [16, 16], min_side=48,
                                        measure=_per_voxel(1e-6, []))
    assert patch == [1, 48, 48]  # 2-D: the slice axis stays 1
    patch, _ = fit_patch_to_time_budget(None, 1, [128, 128, 96], 2, 1.0, 10**9, [32, 32, 32],
                                        measure=_per_voxel(1e-6, []))
    assert patch == [64, 64, 64]  # never below two divisors: the deepest stage keeps 2 voxels per axis


def test_measuring_a_step_leaves_the_model_and_the_rng_alone():
    net = build_network("unet", 3, 2, 3, base_width=4, depth=3, deep_supervision=True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    dropout = torch.nn.Sequential(torch.nn.Conv3d(2, 2, 3, padding=1), torch.nn.Dropout3d(0.5))
    rng = torch.get_rng_state()
    seconds = measure_step_seconds(net, (2, 16, 16, 16), 2, amp="none")
    measure_step_seconds(dropout, (2, 8, 8, 8), 2, amp="auto")  # dropout and the bf16 probe draw random numbers
    assert 0 < seconds < 10
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(rng, torch.get_rng_state())
    # More voxels take longer (16x the voxels; a generous margin for a busy machine).
    assert measure_step_seconds(net, (2, 64, 32, 32), 2, amp="none", repeats=3) > seconds


def test_the_step_time_is_the_median_of_several_steps_after_a_warm_up():
    net = build_network("unet", 3, 1, 2, base_width=4, depth=3, deep_supervision=False)
    # A fake clock: the warm-up pass (100 s) reads only its start; each timed pass reads its start and end. The
    # 3rd timed pass (a busy machine) takes 50 s, the others 1 s: the median of the 5 timed passes is 1 s.
    readings = iter([0.0, 100.0, 101.0, 101.0, 102.0, 102.0, 152.0, 152.0, 153.0, 153.0, 154.0])
    assert measure_step_seconds(net, (1, 8, 8, 8), 1, amp="none", timer=lambda: next(readings)) == 1.0
    assert next(readings, None) is None  # the warm-up and 5 timed passes read the clock


@pytest.fixture(scope="module")
def larger_phantoms(tmp_path_factory):
    return make_phantom_dataset(tmp_path_factory.mktemp("timing") / "ds", n_cases=3, shape=(40, 48, 40), seed=5)


def _options(epochs: int = 10**6, min_iterations: int = 0, patch_size=None) -> TrainOptions:
    # the 3-second budget ends the run
    return TrainOptions(network=NetworkConfig(kwargs={"base_width": 4, "depth": 3}), min_iterations=min_iterations,
                        train=TrainConfig(epochs=epochs, iterations_per_epoch=10, time_budget_minutes=0.05,
                                          val_fraction=0.0, num_threads=1, patch_size=patch_size))


def test_training_shrinks_a_planned_patch_for_the_time_budget_and_says_so(larger_phantoms, tmp_path):
    lines = []
    run_training(larger_phantoms, tmp_path / "plain", _options(min_iterations=0), progress=False, log=lines.append)
    planned = RunPlan.load(tmp_path / "plain" / "plan.json").train.patch_size
    assert not any(line.startswith("time:") for line in lines)  # 0: planned for memory only
    assert min(planned) > 32
    lines = []
    run_training(larger_phantoms, tmp_path / "timed", _options(min_iterations=10**9), progress=False,
                 log=lines.append)
    shrunk = RunPlan.load(tmp_path / "timed" / "plan.json").train.patch_size
    assert math.prod(shrunk) < math.prod(planned) and min(shrunk) >= 32
    assert any(line.startswith("time: a step at patch") and "--min-iterations" in line for line in lines), lines
    # A patch the user gave is theirs; and a run its epochs end first is not shrunk for steps it will never take.
    run_training(larger_phantoms, tmp_path / "given", _options(min_iterations=10**9, patch_size=planned),
                 progress=False)
    assert RunPlan.load(tmp_path / "given" / "plan.json").train.patch_size == planned
    run_training(larger_phantoms, tmp_path / "short", _options(min_iterations=10**9, epochs=1), progress=False)
    assert RunPlan.load(tmp_path / "short" / "plan.json").train.patch_size == planned


def test_a_budget_given_alone_raises_the_epochs_so_that_the_budget_ends_the_run(tmp_path):
    from click.testing import CliRunner

    from voxseg.cli import main
    from voxseg.nets import build_model
    from voxseg.plan import fit_time

    data = make_phantom_dataset(tmp_path / "ds", n_cases=3, shape=(20, 24, 20), seed=1)
    tiny = ["--net-args", "base_width=4,depth=3", "--threads", "1", "--plan-only"]
    epochs = {}
    for name, extra in {"alone": [], "given": ["--epochs", "100"], "none": None}.items():
        budget = [] if extra is None else ["--time-budget", "30", *extra]
        result = CliRunner().invoke(main, ["train", str(data), "--out", str(tmp_path / name), *tiny, *budget])
        assert result.exit_code == 0, result.output
        epochs[name] = RunPlan.load(tmp_path / name / "plan.json").train.epochs
    assert epochs["alone"] > 100 and epochs["given"] == 100 and epochs["none"] == 100
    plan = RunPlan(channel_names=["a"], label_values=[0, 1],
                   network=NetworkConfig("unet", 3, {"base_width": 4, "depth": 3}),
                   train=TrainConfig(patch_size=[16, 16, 16], time_budget_minutes=30, num_threads=1))
    model = build_model(plan)
    assert fit_time(plan, model, 10, lambda line: None).train.epochs == 100
    lines = []
    raised = fit_time(plan, model, 10, lines.append, epochs_from_budget=True).train
    steps = 30 * 60 * 0.9 / raised.planned_step_seconds  # the budget less validation's share
    assert raised.epochs * raised.iterations_per_epoch >= steps > 100 * raised.iterations_per_epoch
    assert "so that the budget ends the run" in lines[-1]


def test_replanned_patch_shrinks_until_the_time_left_holds_the_steps():
    # 0.26 s per step at 64^3 (1e-6 s per voxel): 100 s hold 381 steps; 1,000 need <= 100,000 voxels.
    patch = replanned_patch([64, 64, 64], [16, 16, 16], 0.262144, 100.0, 1000)
    assert patch == [32, 48, 48]  # longest axis first (ties: the first), as planning shrinks it
    assert replanned_patch([64, 64, 64], [16, 16, 16], 0.262144, 100.0, 300) == [64, 64, 64]  # it holds them
    assert replanned_patch([64, 64, 64], [16, 16, 16], 0.262144, 1.0, 10**6) == [32, 32, 32]  # the floor
    assert replanned_patch([1, 96, 80], [16, 16], 0.01, 1.0, 10**6) == [1, 32, 32]  # 2-D: slices stay slices


def test_a_first_epoch_far_slower_than_planned_replans_the_patch(larger_phantoms, tmp_path):
    options = _options(min_iterations=20)
    options = dataclasses.replace(options, train=dataclasses.replace(options.train, time_budget_minutes=0.3,
                                                                     iterations_per_epoch=4))
    run_training(larger_phantoms, tmp_path / "run", options, progress=False, log=lambda line: None, plan_only=True)
    plan_path = tmp_path / "run" / "plan.json"
    planned = RunPlan.load(plan_path)
    # As if planning had run on an idle machine far faster than training will: 1 ms per step, 10^6 steps wanted.
    data = json.loads(plan_path.read_text())
    data["train"].update(planned_step_seconds=1e-3, planned_min_iterations=10**6)
    plan_path.write_text(json.dumps(data))
    lines: list[str] = []
    result = run_training(larger_phantoms, tmp_path / "run", options, resume=True, progress=False, log=lines.append)
    said = [line for line in lines if "re-planned the patch" in line]
    assert len(said) == 1 and said[0].startswith("time: the first epoch ran at "), lines
    replanned = RunPlan.load(plan_path).train.patch_size
    assert math.prod(replanned) < math.prod(planned.train.patch_size) and min(replanned) >= 32
    assert result.iterations > 4  # it trained on with the new patch
    # Planned as measured (the real step time): no re-plan.
    lines = []
    run_training(larger_phantoms, tmp_path / "kept", options, progress=False, log=lines.append)
    assert not any("re-planned" in line for line in lines)
