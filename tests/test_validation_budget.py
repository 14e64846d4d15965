"""Validation sized to its share of a time budget (issue 22): the planned subset, the schedule's use of the
estimate, and a fixed sample of windows."""
import dataclasses

import numpy as np
import torch

from voxseg.config import NetworkConfig, RunPlan, TrainConfig
from voxseg.data.cache import PreparedCase
from voxseg.plan.validation_budget import plan_validation, validation_budget
from voxseg.train.phases import RunClock
from voxseg.train.validation import (VALIDATION_SHARE, ValidationSchedule, validation_cases, validation_dice,
                                     validation_windows, window_starts_of)


def _plan(budget=1.0, **train) -> RunPlan:
    cfg = TrainConfig(patch_size=[1, 32, 32], batch_size=2, time_budget_minutes=budget, planned_step_seconds=0.3,
                      **train)
    return RunPlan(channel_names=["t1"], label_values=[0, 1], train=cfg,
                   network=NetworkConfig("unet", 2, {"base_width": 4, "depth": 3}))


def _case(case_id: str, shape=(20, 64, 64)) -> PreparedCase:
    rng = np.random.default_rng(len(case_id))
    label = np.zeros(shape, np.uint8)
    label[5:9, 10:30, 10:30] = 1
    return PreparedCase(case_id, rng.normal(size=(1, *shape)).astype(np.float32), label)


def test_whole_validation_fits_then_subset():
    assert validation_budget([10, 10], 0.1, 5.0) == (2, None, 2.0)
    cases, per_case, seconds = validation_budget([1000, 1000], 0.1, 20.0)
    assert (cases, per_case) == (2, 100) and seconds <= 20.0
    cases, per_case, seconds = validation_budget([1000, 1000, 1000], 0.1, 1.0)
    assert cases == 2 and per_case == 5 and seconds <= 1.0  # too few windows each: fewer cases


def test_plan_validation_says_and_records_the_subset():
    lines = []
    cases = [_case("a"), _case("bb")]
    plan = plan_validation(_plan(budget=0.1), cases, lines.append)  # 0.6 s of validation, 0.05 s per window
    t = plan.train
    assert t.val_windows == 6 and t.val_cases == 2 and t.val_seconds <= VALIDATION_SHARE * 6.0
    assert lines == [f"planner: {plan.planner_notes[-1]}"]
    assert plan.planner_notes[-1].startswith("validation: 2 of 2 cases, 6 windows each, about ")
    assert RunPlan.from_dict(plan.to_dict()).train.val_windows == 6  # kept in plan.json
    assert plan_validation(_plan(budget=None), cases, lines.append).train.val_windows is None  # no budget: whole


def test_subset_is_fixed_and_covers_foreground():
    plan = dataclasses.replace(_plan(), train=dataclasses.replace(_plan().train, val_cases=2, val_windows=8))
    cases = [_case("a"), _case("bb"), _case("ccc")]
    chosen = validation_cases(cases, plan)
    assert [c.case_id for c in chosen] == [c.case_id for c in validation_cases(cases[::-1], plan)]
    assert len(chosen) == 2
    first = [validation_windows(c, plan) for c in chosen]
    assert first == [validation_windows(c, plan) for c in chosen]  # the same at every epoch
    assert all(len(w) == 8 for w in first)
    assert len(window_starts_of((20, 64, 64), plan)) == 20 * 3 * 3  # as predict_volume: each slice once
    assert sum(5 <= z < 9 for z, _, _ in first[0]) == 6  # three quarters of the windows hold foreground
    model = torch.nn.Conv2d(1, 2, 1)
    dice = validation_dice(model, plan, chosen, torch.device("cpu"), first)
    assert set(dice) == {"label_1"} and 0.0 <= dice["label_1"] <= 1.0


def _simulated_run(budget_s: float, step_s: float, validation_s: float, estimate_s: float | None) -> float:
    """Seconds a budgeted run takes with a fake clock: epochs of 10 steps, a validation after each that is due."""
    now = [0.0]
    clock = RunClock(budget_s / 60.0, now=lambda: now[0])
    schedule = ValidationSchedule(1, clock.budget_s, estimate_s=estimate_s)
    for epoch in range(1, 10_000):
        stop = False
        for _ in range(10):
            now[0] += step_s
            if clock.spent(schedule.reserve_s()):
                stop = True
                break
        if schedule.due(epoch, clock.seconds(), is_last=stop):
            now[0] += validation_s
            schedule.record(validation_s)
        if stop:
            return clock.seconds()
    raise AssertionError("the budget never ran out")


def test_budget_holds_when_whole_validation_takes_three_budgets():
    budget_s, step_s, per_window_s = 60.0, 0.5, 0.01
    windows = [9000, 9000]  # whole: 180 s, three times the budget
    assert per_window_s * sum(windows) == 3 * budget_s
    assert _simulated_run(budget_s, step_s, 180.0, None) > 3 * budget_s  # unplanned: the old overrun
    _, _, seconds = validation_budget(windows, per_window_s, VALIDATION_SHARE * budget_s)
    assert _simulated_run(budget_s, step_s, seconds, seconds) <= budget_s + step_s
