"""Planners return a new plan (or options) and leave the one they were given as it was."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from voxseg.config import NetworkConfig, RunPlan, TrainConfig
from voxseg.data import PreprocessConfig
from voxseg.nets import build_model
from voxseg.plan import fit_memory, fit_time, hardware_defaults, resolve_orientation
from voxseg.plan.memory import estimate_training_memory
from voxseg.config import TrainOptions

GIB = 2**30


@pytest.fixture
def plan() -> RunPlan:
    return RunPlan(channel_names=["MR"], label_values=[0, 1],
                   network=NetworkConfig("unet", 3, {"base_width": 4, "depth": 3}),
                   train=TrainConfig(patch_size=[32, 32, 32], batch_size=2, epochs=2, iterations_per_epoch=5,
                                     time_budget_minutes=1.0))


def test_fit_memory_shrinks_a_copy_of_the_plan(plan, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model, before, said = build_model(plan), copy.deepcopy(plan), []
    need = estimate_training_memory(model, (1, 32, 32, 32), 2, plan.train.optimizer, "cpu").total
    half = estimate_training_memory(model, (1, 16, 32, 32), 2, plan.train.optimizer, "cpu").total
    fitted = fit_memory(plan, model, said.append, memory_gib=(half + need) / 2 / GIB)
    assert plan == before
    assert math.prod(fitted.train.patch_size) * fitted.train.batch_size < 2 * 32 ** 3
    assert fitted.network == plan.network and fitted.train.epochs == plan.train.epochs
    assert said and said[0].startswith("memory: patch [32, 32, 32] with batch 2 would need more than --memory")
    # The user's own patch is never shrunk: refused under --memory, the plan passed in returned unchanged otherwise.
    with pytest.raises(ValueError, match=r"patch \[32, 32, 32\] with batch 2 needs about"):
        fit_memory(plan, model, said.append, memory_gib=(half + need) / 2 / GIB, user_patch=True)
    assert fit_memory(plan, model, said.append, memory_gib=2 * need / GIB, user_patch=True) is plan


def test_fit_time_shrinks_a_copy_of_the_plan(plan, monkeypatch):
    monkeypatch.setattr("voxseg.plan.fit.fit_patch_to_time_budget",
                        lambda model, channels, patch, *args: ([16, 32, 32], 0.5))
    before, said = copy.deepcopy(plan), []
    fitted = fit_time(plan, build_model(plan), 1000, said.append)
    assert plan == before and fitted.train.patch_size == [16, 32, 32]
    assert said[0].startswith("time: a step at patch [32, 32, 32] would leave the 1-minute budget fewer than 10 ")


def test_options_are_resolved_into_new_options(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    options = TrainOptions(orientation="LPS", preprocess=PreprocessConfig())
    before = copy.deepcopy(options)
    resolved = resolve_orientation(options, {}, print)
    assert resolved.preprocess.orientation == "LPS" and options == before
    kwargs, cap, note = hardware_defaults(options)
    assert kwargs == {"base_width": 16, "deep_supervision": True} and options.network.kwargs == {}
    assert cap == 64 ** 3 and note.startswith("CPU defaults:")
