"""Learning-rate schedules (hand values), the plateau scheduler (torch oracle) and early stopping."""
from __future__ import annotations

import json
import math

import pytest
import torch

from voxseg.train.early_stopping import EarlyStopping
from voxseg.train.schedules import SCHEDULES, PlateauScheduler, constant, cosine, flat_cosine, lr_factor, poly


@pytest.mark.parametrize(
    "t,expected",
    [(0.0, 1.0), (0.5, 0.5**0.9), (0.75, 0.25**0.9), (1.0, 0.0), (-0.2, 1.0), (1.3, 0.0)],
)
def test_poly_by_hand(t, expected):
    assert poly(t) == pytest.approx(expected, abs=1e-12)


def test_poly_power():
    assert poly(0.5, power=1.0) == 0.5
    assert poly(0.5, power=2.0) == 0.25


@pytest.mark.parametrize(
    "t,kw,expected",
    [
        (0.0, {}, 1.0),
        (0.5, {}, 0.5),
        (1.0, {}, 0.0),
        (0.25, {}, 0.5 * (1 + math.cos(math.pi / 4))),
        # warm-up: linear from 0, full rate at its end, then cosine over the remaining 0.9
        (0.0, {"warmup": 0.1}, 0.0),
        (0.05, {"warmup": 0.1}, 0.5),
        (0.1, {"warmup": 0.1}, 1.0),
        (0.55, {"warmup": 0.1}, 0.5),
        # one restart: two cycles of 0.5
        (0.25, {"restarts": 1}, 0.5),
        (0.5, {"restarts": 1}, 1.0),
        (0.75, {"restarts": 1}, 0.5),
        (0.5, {"restarts": 1, "restart_decay": 0.5}, 0.5),
        (0.75, {"restarts": 1, "restart_decay": 0.5}, 0.25),
        # three cycles after a 0.1 warm-up: restarts at 0.4 and 0.7
        (0.4, {"warmup": 0.1, "restarts": 2}, 1.0),
        (0.7, {"warmup": 0.1, "restarts": 2, "restart_decay": 0.5}, 0.25),
        (0.85, {"warmup": 0.1, "restarts": 2}, 0.5),
        # SGDR T_mult = 2: cycles of 1/3 and 2/3
        (1 / 3, {"restarts": 1, "cycle_mult": 2.0}, 1.0),
        (2 / 3, {"restarts": 1, "cycle_mult": 2.0}, 0.5),
    ],
)
def test_cosine_by_hand(t, kw, expected):
    assert cosine(t, **kw) == pytest.approx(expected, abs=1e-12)


def test_cosine_falls_to_zero_just_before_a_restart():
    assert cosine(0.5 - 1e-9, restarts=1) == pytest.approx(0.0, abs=1e-12)
    assert cosine(1.0 - 1e-9, restarts=3) == pytest.approx(0.0, abs=1e-12)


def test_cosine_matches_torch_cosine_annealing_warm_restarts():
    # Oracle: torch's SGDR with T_0 = 10 steps, 3 cycles of a 30-step run, eta_min 0.
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=10)
    for step in range(30):
        assert cosine(step / 30, restarts=2) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-9), step
        opt.step()
        sched.step()


@pytest.mark.parametrize("t,expected", [(0.0, 1.0), (0.5, 1.0), (0.72, 1.0), (0.86, 0.5), (1.0, 0.0)])
def test_flat_cosine_by_hand(t, expected):
    assert flat_cosine(t) == pytest.approx(expected, abs=1e-12)


def test_flat_cosine_seed_003_setting():
    # 200 epochs, cosine decay after epoch 100: half-way through the decay at epoch 150
    assert flat_cosine(100 / 200, flat_fraction=0.5) == 1.0
    assert flat_cosine(150 / 200, flat_fraction=0.5) == pytest.approx(0.5)


def test_registry_and_lr_factor():
    assert set(SCHEDULES) == {"poly", "cosine", "flat_cosine", "constant"}
    assert all(s.reference for s in SCHEDULES.values())
    assert lr_factor("poly", 0.5) == poly(0.5)
    assert lr_factor("cosine", 0.7, warmup=0.1, restarts=2) == cosine(0.7, warmup=0.1, restarts=2)
    assert lr_factor("constant", 0.9) == constant(0.9) == 1.0
    with pytest.raises(ValueError, match=r"unknown schedule 'step'; available: poly"):
        lr_factor("step", 0.1)
    with pytest.raises(ValueError, match=r"schedule 'poly' has no option\(s\) warmup; options: power"):
        lr_factor("poly", 0.1, warmup=0.1)
    with pytest.raises(ValueError, match="warmup"):
        cosine(0.5, warmup=1.0)


# ---------------------------------------------------------------- plateau


@pytest.mark.parametrize(
    "kw",
    [
        {"mode": "max", "patience": 2},
        {"mode": "min", "patience": 1, "cooldown": 2, "min_lr": 0.02},
        {"mode": "max", "patience": 0, "threshold": 0.1, "threshold_mode": "abs"},
    ],
)
def test_plateau_matches_torch_reduce_lr_on_plateau(kw):
    values = [0.1, 0.3, 0.3, 0.29, 0.3, 0.5, 0.5, 0.49, 0.2, 0.2, 0.6, 0.6, 0.6, float("nan"), 0.6, 0.1]
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, **kw)
    ours = PlateauScheduler(0.1, factor=0.5, **kw)
    for v in values:
        ref.step(v)
        assert ours.step(v) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-15)
    assert ours.lr < 0.1


def test_plateau_state_round_trip_through_json():
    a = PlateauScheduler(1e-3, patience=1)
    for v in [0.5, 0.4, 0.4]:
        a.step(v)
    b = PlateauScheduler(1e-3, patience=1)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for v in [0.3, 0.3, 0.6, 0.1, 0.1]:
        assert a.step(v) == b.step(v)
    with pytest.raises(ValueError, match="unexpected key"):
        b.load_state_dict({"nope": 1})


# ---------------------------------------------------------------- early stopping


def test_early_stopping_patience_by_hand():
    es = EarlyStopping(patience=3)
    # improvements at updates 1, 2, 4; then 3 non-improving values -> stop at update 7
    decisions = [es.update(v) for v in [0.1, 0.2, 0.2, 0.3, 0.3, 0.25, 0.29]]
    assert decisions == [False] * 6 + [True]
    assert es.best == 0.3 and es.best_update == 4 and es.stopped
    assert es.update(0.9)  # stays stopped


def test_early_stopping_min_delta_min_mode_nan_and_rows():
    es = EarlyStopping(metric="val_loss", mode="min", patience=2, min_delta=0.05)
    assert not es.update({"val_loss": 1.0, "epoch": 1})
    assert not es.update({"val_loss": 0.97})  # less than min_delta better: not an improvement
    assert es.best == 1.0 and es.num_bad == 1
    assert not es.update(0.9)
    assert not es.update(float("nan"))
    assert es.update(0.88)
    with pytest.raises(KeyError, match="val_loss"):
        EarlyStopping(metric="val_loss").update({"val_dice_mean": 0.5})
    with pytest.raises(ValueError):
        EarlyStopping(patience=0)


def test_early_stopping_state_round_trip():
    a = EarlyStopping(patience=3)
    for v in [0.5, 0.6, 0.55]:
        a.update(v)
    b = EarlyStopping(patience=3)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert [a.update(v) for v in [0.58, 0.6, 0.7, 0.1]] == [b.update(v) for v in [0.58, 0.6, 0.7, 0.1]]
    assert vars(a) == vars(b)
