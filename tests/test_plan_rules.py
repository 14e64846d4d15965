"""The planner's rules on made-up fingerprints (BraTS-, hippocampus- and IBSR-like), and plan.json recording them."""
from __future__ import annotations

import dataclasses

import numpy as np

from voxseg.config import NetworkConfig, RunPlan, TrainConfig
from voxseg.data.phantoms import make_phantom_dataset
from voxseg.plan.rules import (augmentation_rule, checkpoint_rule, modality, n4_rule, n4_seconds, network_depth_rule,
                               optimizer_rule,
                               patches_per_case, structure_thickness_mm, working_spacing_rule)
from voxseg.runs import TrainOptions, run_training

BRATS = dict(spacing=(1.0, 1.0, 1.0), extent=(155.0, 240.0, 240.0), cases=10, thinnest=2.5,
             channels=["flair", "t1", "t1ce", "t2"])
HIPPOCAMPUS = dict(spacing=(1.0, 1.0, 1.0), extent=(36.0, 50.0, 35.0), cases=208, thinnest=2.3, channels=["image"])
IBSR = dict(spacing=(0.9375, 1.5, 0.9375), extent=(240.0, 192.0, 240.0), cases=7, thinnest=1.9, channels=["image"])


def _plan(d: dict, budget: float | None):
    spacing = working_spacing_rule(d["spacing"], d["extent"], budget, d["thinnest"]).value
    patches = patches_per_case(d["extent"], spacing or d["spacing"])
    voxels = float(np.prod([e / s for e, s in zip(d["extent"], d["spacing"])]))
    return dict(spacing=spacing, optimizer=optimizer_rule(patches, budget).value,
                augment=augmentation_rule(d["cases"], patches, budget).value,
                n4=n4_rule(d["channels"], patches, budget, n4_seconds(voxels, len(d["channels"]), d["cases"])).value)


def test_a_brats_like_dataset_in_an_hour_coarsens_and_takes_adam_full_augmentation_and_n4():
    assert _plan(BRATS, 60) == dict(spacing=(2.0, 2.0, 2.0), optimizer=("adam", 1e-3), augment="default", n4=True)


def test_a_hippocampus_like_dataset_keeps_todays_plan():
    for budget in (None, 20, 60):
        assert _plan(HIPPOCAMPUS, budget) == dict(spacing=None, optimizer=("sgd", 0.01), augment="flips", n4=False)


def test_an_ibsr_like_dataset_keeps_its_resolution_and_flips():
    plan = _plan(IBSR, 30)
    assert plan["spacing"] is None and plan["optimizer"] == ("adam", 1e-3) and plan["augment"] == "flips"
    # the same cases, fewer of them: under 100 patches in all, the full chain
    assert _plan(dict(IBSR, cases=3), 30)["augment"] == "default"
    assert "(< 100), the full chain" in augmentation_rule(3, 32.0, 30).reason
    # thin structures alone keep it, even with isotropic voxels
    iso = dict(IBSR, spacing=(1.0, 1.0, 1.0))
    choice = working_spacing_rule(iso["spacing"], iso["extent"], 30, iso["thinnest"])
    assert choice.value is None and "thinnest structure is 1.9 mm thick" in choice.reason
    assert working_spacing_rule(iso["spacing"], iso["extent"], 30, None).value is None  # not measured: kept
    assert working_spacing_rule(iso["spacing"], iso["extent"], 30, 2.5).value == (2.0, 2.0, 2.0)


def test_long_or_no_budgets_keep_the_resolution_and_sgd():
    for budget in (None, 600):
        plan = _plan(BRATS, budget)
        assert plan["spacing"] is None and plan["optimizer"] == ("sgd", 0.01) and plan["augment"] == "flips"


def test_modality_and_n4_budget():
    assert modality(["CT"]) == "CT" and modality(["T1", "FLAIR"]) == "MR" and modality(["image"]) == "unknown"
    assert n4_rule(["t1"], 4.0, 60, 14 * 60.0).value is True
    assert n4_rule(["t1"], 4.0, 60, 16 * 60.0).value is False  # over a quarter of the hour
    assert n4_rule(["CT"], 4.0, 60, 1.0).value is False


def test_thickness_of_a_slab_and_a_cube():
    label = np.zeros((20, 20, 20), np.uint8)
    label[5:15, 5:15, 5:15] = 1  # a 10-voxel cube: 2V/S = 2 * 1000 / 600
    assert structure_thickness_mm(label, (1.0, 1.0, 1.0), [1]) == 2 * 1000 / 600
    assert structure_thickness_mm(label, (2.0, 2.0, 2.0), [1]) == 2 * 2 * 1000 / 600
    assert structure_thickness_mm(label, (1.0, 1.0, 1.0), [3]) is None


def test_checkpoint_rule():
    assert checkpoint_rule(0.2).value == "best" and checkpoint_rule(0.0).value == "last"


def test_plan_json_records_the_choices_and_the_user_keeps_what_they_set(tmp_path):
    data = make_phantom_dataset(tmp_path / "data", n_cases=3, shape=(24, 24, 24), spacing=(1.0, 1.0, 1.0), seed=1)
    lines: list[str] = []
    train = TrainConfig(epochs=1, iterations_per_epoch=1, num_threads=1, time_budget_minutes=5)
    options = TrainOptions(network=NetworkConfig(kwargs={"base_width": 4, "depth": 3}), train=train, min_iterations=0)
    run_training(data, tmp_path / "run", options, progress=False, log=lines.append, plan_only=True)
    plan = RunPlan.load(tmp_path / "run" / "plan.json")
    notes = plan.planner_notes
    assert [n.split(":")[0] for n in notes] == ["working spacing", "optimiser", "augmentation", "N4", "validation",
                                                "weights kept", "validation"], notes
    assert notes[-1].startswith("validation: 1 of 1 cases, whole volumes, about ")  # its cost, when planned
    assert plan.train.optimizer == "sgd" and plan.train.lr == 0.01 and plan.preprocess.n4 is False
    assert plan.preprocess.target_spacing is None
    assert all(f"planner: {n}" in lines for n in notes)
    mine = dataclasses.replace(options, augment="none", train=dataclasses.replace(train, optimizer="adam"))
    run_training(data, tmp_path / "mine", mine, progress=False, log=lines.append, plan_only=True)
    plan = RunPlan.load(tmp_path / "mine" / "plan.json")
    assert plan.train.optimizer == "adam" and plan.train.lr == 1e-3
    assert not any(n.startswith(("optimiser", "augmentation")) for n in plan.planner_notes)


ISOTROPIC = [[2, 2, 2]] * 4  # the unet preset's 4 down-sampling steps


def test_network_depth_rule_keeps_four_voxels_at_the_deepest_stage():
    cases = [([48, 64, 48], 4),    # hippocampus-like, planned with 5 stages: 3 steps leave 6x8x6
             ([40, 56, 40], 4),    # the same re-planned for 4 stages: 5x7x5
             ([64, 64, 64], 5),    # BraTS at 2 mm in a 64^3 patch: 4x4x4 after 4 steps
             ([128, 128, 128], 5),  # capped at the preset's depth
             ([32, 64, 64], 4),    # the smallest axis decides
             ([8, 8, 8], 3)]       # never fewer than 3 stages
    for patch, depth in cases:
        assert network_depth_rule(patch, ISOTROPIC, 5).value == depth, patch
    assert network_depth_rule([64, 64, 64], ISOTROPIC[:3], 4).value == 4
    assert network_depth_rule([128, 128], [[2, 2]] * 4, 5).value == 5  # 2-D


def test_network_depth_rule_ignores_axes_a_step_does_not_down_sample():
    thick = [[1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2]]  # thick slices: z down-sampled from the third step
    assert network_depth_rule([16, 128, 128], thick, 5).value == 5  # z: 16 -> 4
    assert network_depth_rule([8, 128, 128], thick, 5).value == 4   # z: 8 -> 4 after 3 steps, 2 after 4
    assert "--net-args depth" in network_depth_rule([8, 128, 128], thick, 5).note()


def test_plan_run_chooses_the_depth_for_the_planned_patch_and_replans_the_patch(tmp_path):
    data = make_phantom_dataset(tmp_path / "data", n_cases=2, shape=(40, 56, 40), spacing=(1.0, 1.0, 1.0), seed=1)
    lines: list[str] = []
    train = TrainConfig(epochs=1, iterations_per_epoch=1, num_threads=1)
    options = TrainOptions(network=NetworkConfig(kwargs={"base_width": 4}), train=train, min_iterations=0)
    run_training(data, tmp_path / "run", options, progress=False, log=lines.append, plan_only=True)
    plan = RunPlan.load(tmp_path / "run" / "plan.json")
    assert plan.network.kwargs["depth"] == 4 and plan.train.patch_size == [40, 56, 40]
    assert any(n.startswith("network depth: 4") for n in plan.planner_notes)
    assert any(line.startswith("planner: network depth: 4") for line in lines)
    mine = dataclasses.replace(options, network=NetworkConfig(kwargs={"base_width": 4, "depth": 5}))
    run_training(data, tmp_path / "mine", mine, progress=False, log=lines.append, plan_only=True)
    plan = RunPlan.load(tmp_path / "mine" / "plan.json")
    assert plan.network.kwargs["depth"] == 5 and plan.train.patch_size == [48, 64, 48]
    assert not any(n.startswith("network depth") for n in plan.planner_notes)
