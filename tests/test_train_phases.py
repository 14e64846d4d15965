"""Learning-rate phases (voxseg.train.phases): main schedule on the fraction of the run done (epochs or time
budget, whichever ends first), plateau scaling, the SWA phase after the main run, and the budget projection."""
import pytest

from voxseg.config import TrainConfig
from voxseg.train.phases import DONE, MAIN, SWA, BudgetProjection, Phases
from voxseg.train.schedules import PlateauScheduler
from voxseg.train.swa import swa_lr


def test_epochs_go_main_then_swa_then_done():
    phases = Phases(TrainConfig(epochs=3, swa_epochs=2))
    assert [phases.of_epoch(e, False, 0) for e in range(3)] == [MAIN] * 3
    assert phases.of_epoch(3, False, 0) == SWA and phases.of_epoch(4, False, 1) == SWA
    assert phases.of_epoch(5, False, 2) == DONE
    assert phases.of_epoch(1, True, 0) == SWA  # the main phase ended early (budget, early stopping)
    assert Phases(TrainConfig(epochs=3)).of_epoch(3, False, 0) == DONE
    assert Phases(TrainConfig(epochs=3)).of_epoch(1, True, 0) == DONE


def test_the_main_rate_follows_the_schedule_on_epochs_or_on_the_budget_whichever_ends_first():
    cfg = TrainConfig(lr=0.01, epochs=4, iterations_per_epoch=10, schedule="poly")
    phases = Phases(cfg)
    assert phases.lr(MAIN, 0, 0, elapsed_s=0.0) == pytest.approx(0.01)
    assert phases.lr(MAIN, 2, 0, elapsed_s=1e6) == pytest.approx(0.01 * 0.5 ** 0.9)  # no budget: clock ignored
    budget = Phases(TrainConfig(lr=0.01, epochs=4, iterations_per_epoch=10, time_budget_minutes=1.0))
    assert budget.lr(MAIN, 0, 5, elapsed_s=45.0) == pytest.approx(0.01 * 0.25 ** 0.9)  # 3/4 of the budget
    assert budget.lr(MAIN, 3, 0, elapsed_s=6.0) == pytest.approx(0.01 * 0.25 ** 0.9)  # 3/4 of the epochs


def test_a_plateau_reduction_scales_the_scheduled_rate():
    plateau = PlateauScheduler(0.01, factor=0.5, patience=0)
    phases = Phases(TrainConfig(lr=0.01, epochs=4, iterations_per_epoch=10, schedule="constant"), plateau)
    assert phases.lr(MAIN, 1, 0, 0.0) == pytest.approx(0.01)
    plateau.step(0.5)
    plateau.step(0.4)
    assert phases.lr(MAIN, 1, 0, 0.0) == pytest.approx(0.005)


def test_the_swa_rate_runs_on_the_fraction_of_the_swa_phase():
    cfg = TrainConfig(lr=0.01, epochs=4, iterations_per_epoch=10, swa_epochs=5, swa_cycles=5)
    phases = Phases(cfg)
    assert phases.lr(SWA, 4, 0, 0.0, swa_done=0) == pytest.approx(0.005)
    assert phases.lr(SWA, 6, 5, 1e9, swa_done=2) == pytest.approx(swa_lr(2.5 / 5, 0.01))


def test_a_too_short_budget_is_projected_once_early_in_the_session():
    projection = BudgetProjection(budget_minutes=1.0)
    said = [projection.after_step(i, elapsed_s=float(i), phase=MAIN) for i in range(1, 10)]
    warnings = [w for w in said if w]
    assert len(warnings) == 1 and said[7] == warnings[0]  # after 7 timed steps (the 1st is not timed)
    assert "at 1 s per iteration the 1-minute budget allows about 60 iterations" in warnings[0]
    roomy = BudgetProjection(budget_minutes=60.0)
    assert not any(roomy.after_step(i, float(i), MAIN) for i in range(1, 10))  # 3,600 iterations: fine
    assert not any(BudgetProjection(None).after_step(i, float(i), MAIN) for i in range(1, 10))
    assert not any(BudgetProjection(1.0).after_step(i, float(i), SWA) for i in range(1, 10))


def _said(projection, durations, per_epoch=50):
    """What ``projection`` says over steps of these durations (seconds), epochs of ``per_epoch`` steps."""
    out, elapsed = [], 0.0
    for i, d in enumerate(durations, start=1):
        elapsed += d
        message = projection.after_step(i, elapsed, MAIN, last_of_epoch=i % per_epoch == 0)
        if message:
            out.append((i, message))
    return out


def test_one_slow_step_does_not_warn_and_a_slow_start_is_corrected_by_the_first_epoch():
    # 0.5 s steps and a 5-minute budget hold about 600 iterations; a busy machine slows one step 100-fold.
    assert _said(BudgetProjection(5.0), [0.5] * 5 + [50.0] + [0.5] * 94) == []
    # A slow start (10 steps of 4 s) looks like too few iterations early; the first epoch's rate corrects it.
    said = _said(BudgetProjection(5.0), [4.0] * 10 + [0.5] * 90)
    assert [i for i, _ in said] == [9, 50]
    assert said[0][1].startswith("warning: at 4 s per iteration the 5-minute budget allows about 75 iterations")
    assert "ignore that warning" in said[1][1] and "not the 75 warned about" in said[1][1]
    # The validation share is left out of the projected iterations: 0.9 * 60 s / 1 s.
    said = _said(BudgetProjection(1.0, train_share=0.9), [1.0] * 20)
    assert "allows about 54 iterations" in said[0][1]


def test_the_first_epoch_is_compared_with_the_planned_step_time():
    said = _said(BudgetProjection(30.0, planned_step_seconds=0.1), [0.5] * 60)
    assert len(said) == 1 and said[0][0] == 50
    assert said[0][1] == ("time: the first epoch ran at 0.5 s per iteration, against 0.1 s measured when planning: "
                          "the budget allows about 3600 iterations")  # 50 + (1800 - 25) / 0.5
    assert _said(BudgetProjection(30.0, planned_step_seconds=0.4), [0.5] * 60) == []  # within 2x: nothing to say


def test_validation_keeps_to_its_share_and_the_final_one_ends_within_the_budget():
    from voxseg.train.phases import RunClock
    from voxseg.train.validation import VALIDATION_SHARE, ValidationSchedule

    # Epochs of 50 steps of 0.2 s and a validation of 25 s (two whole large volumes) under a 10-minute budget:
    # the loop's decisions (stop at the budget less the reserve, validate when due), on a fake clock.
    now = [0.0]
    clock = RunClock(10.0, now=lambda: now[0])
    schedule = ValidationSchedule(val_every=1, budget_s=clock.budget_s)
    steps = validations = epoch = 0
    stopped = False
    while not stopped:
        for _ in range(50):
            now[0] += 0.2
            steps += 1
            if clock.spent(schedule.reserve_s()):
                stopped = True
                break
        epoch += 1
        if schedule.due(epoch, clock.seconds(), is_last=stopped):
            start = clock.seconds()
            now[0] += 25.0
            schedule.record(clock.seconds() - start)
            validations += 1
    assert clock.seconds() <= clock.budget_s + 0.2  # the final validation ends within the budget (a step late at most)
    assert schedule.spent_s <= VALIDATION_SHARE * clock.budget_s + 25.0  # its share, and the final one
    assert steps * 0.2 >= 0.85 * clock.budget_s  # the steps planned at 90% of the budget mostly ran
    assert 2 <= validations < epoch
    # Without a budget, every val_every-th epoch and the last.
    plain = ValidationSchedule(val_every=2, budget_s=float("inf"))
    plain.record(1e6)
    assert [plain.due(e, 0.0, e == 5) for e in range(1, 6)] == [False, True, False, True, True]
    assert plain.reserve_s() == 0.0
