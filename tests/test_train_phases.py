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
    assert len(warnings) == 1 and said[3] == warnings[0]  # after the 4th step (the 1st is not timed)
    assert "at 1 s per iteration the 1-minute budget allows about 60 iterations" in warnings[0]
    roomy = BudgetProjection(budget_minutes=60.0)
    assert not any(roomy.after_step(i, float(i), MAIN) for i in range(1, 10))  # 3,600 iterations: fine
    assert not any(BudgetProjection(None).after_step(i, float(i), MAIN) for i in range(1, 10))
    assert not any(BudgetProjection(1.0).after_step(i, float(i), SWA) for i in range(1, 10))
