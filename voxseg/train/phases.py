"""The phases of a run and their learning rates: the main schedule, then the optional SWA phase.

Main phase: the learning rate is ``lr * lr_factor(schedule, done)`` (:mod:`voxseg.train.schedules`), where
``done`` is the fraction of the run done, the larger of ``epoch / epochs`` (counted in iterations) and
``elapsed / time_budget``: whichever limit ends first. With a budget the rate still decays to ~0 by its end,
so a budget-limited run converges instead of stopping at a high rate. A plateau scheduler, when on, scales
that rate by its own reductions.

SWA phase (``swa_epochs`` > 0): after the main phase (its epochs, or earlier by the time budget or early
stopping), ``swa_epochs`` more epochs at the restarting cosine rate of :func:`voxseg.train.swa.swa_lr`.
"""
from __future__ import annotations

import math
import time

from voxseg.config import TrainConfig
from voxseg.train.schedules import PlateauScheduler, lr_factor
from voxseg.train.swa import swa_lr

__all__ = ["MAIN", "SWA", "DONE", "FEW_ITERATIONS", "Phases", "RunClock", "BudgetProjection"]

MAIN, SWA, DONE = "main", "swa", "done"
FEW_ITERATIONS = 200  # below this a budget-limited run gets a warning with its projected iteration count
PROJECT_AFTER = 4  # iterations of a session timed for the projection (the first is excluded)


def _budget_seconds(minutes: float | None) -> float:
    return minutes * 60.0 if minutes else math.inf


class RunClock:
    """Seconds a run has trained, earlier sessions included, against its time budget.

    Args:
        budget_minutes: the time budget; None or 0: none (``budget_s`` is ``inf``).
        elapsed_before: seconds trained by earlier sessions (resume).
    """

    def __init__(self, budget_minutes: float | None = None, elapsed_before: float = 0.0):
        self.budget_s = _budget_seconds(budget_minutes)
        self.elapsed_before = elapsed_before
        self._t0 = time.perf_counter() - elapsed_before

    def seconds(self) -> float:
        """Seconds trained so far (earlier sessions included)."""
        return time.perf_counter() - self._t0

    def session_seconds(self) -> float:
        """Seconds of this session."""
        return self.seconds() - self.elapsed_before

    def spent(self) -> bool:
        """The time budget is used up."""
        return self.seconds() >= self.budget_s


class Phases:
    """Which phase an epoch belongs to, and the learning rate at each of its iterations.

    Args:
        cfg: the run's training settings (``lr``, ``epochs``, ``iterations_per_epoch``, ``time_budget_minutes``,
            ``schedule``, ``schedule_kwargs``, ``swa_epochs``, ``swa_cycles``, ``swa_lr_fraction``).
        plateau: the plateau scheduler, when on.
    """

    def __init__(self, cfg: TrainConfig, plateau: PlateauScheduler | None = None):
        self.cfg, self.plateau = cfg, plateau
        self.budget_s = _budget_seconds(cfg.time_budget_minutes)

    def of_epoch(self, epoch: int, stopped_main: bool, swa_done: int) -> str:
        """:data:`MAIN`, :data:`SWA` or :data:`DONE` (nothing left to train) for the 0-based ``epoch``.

        Args:
            stopped_main: the main phase ended before its epochs (time budget, early stopping).
            swa_done: epochs of the SWA phase completed.
        """
        if epoch >= self.cfg.epochs or stopped_main:
            return DONE if swa_done >= self.cfg.swa_epochs else SWA
        return MAIN

    def lr(self, phase: str, epoch: int, iteration: int, elapsed_s: float, swa_done: int = 0) -> float:
        """The learning rate of ``iteration`` (0-based, within the epoch) of ``epoch`` in ``phase``.

        Args:
            elapsed_s: seconds trained so far (the main schedule's clock when there is a time budget).
            swa_done: SWA epochs completed before this one (SWA phase only).
        """
        cfg = self.cfg
        if phase == SWA:
            t_swa = (swa_done + iteration / cfg.iterations_per_epoch) / cfg.swa_epochs
            return swa_lr(t_swa, cfg.lr, cycles=cfg.swa_cycles, restart_fraction=cfg.swa_lr_fraction)
        total_iters = cfg.epochs * cfg.iterations_per_epoch
        done = max(epoch / cfg.epochs + iteration / total_iters, elapsed_s / self.budget_s)
        lr = cfg.lr * lr_factor(cfg.schedule, done, **cfg.schedule_kwargs)
        if self.plateau is not None:
            lr *= self.plateau.lr / cfg.lr
        return lr


class BudgetProjection:
    """Projects, early in a session, how many iterations a time budget allows; says so when too few.

    The first step of a session warms up (allocation, kernel choice) and is not timed; the next
    ``PROJECT_AFTER - 1`` steps give the seconds per iteration.

    Args:
        budget_minutes: the run's time budget (None: nothing to project).
    """

    def __init__(self, budget_minutes: float | None):
        self.budget_minutes = budget_minutes
        self.budget_s = _budget_seconds(budget_minutes)
        self._steps, self._first_s = 0, 0.0

    def after_step(self, iterations_done: int, elapsed_s: float, phase: str) -> str | None:
        """Call after every step; returns the warning, once, when the budget allows fewer than
        :data:`FEW_ITERATIONS` iterations, else None.

        Args:
            iterations_done: iterations of the run so far (earlier sessions included).
            elapsed_s: seconds of the run so far (``RunClock.seconds``).
            phase: the step's phase (the SWA phase has no budget to project).
        """
        self._steps += 1
        if self._steps == 1:
            self._first_s = elapsed_s
        elif self._steps == PROJECT_AFTER and phase != SWA and math.isfinite(self.budget_s):
            seconds_per_it = (elapsed_s - self._first_s) / (PROJECT_AFTER - 1)
            projected = iterations_done + (self.budget_s - elapsed_s) / seconds_per_it
            if projected < FEW_ITERATIONS:
                return (f"warning: at {seconds_per_it:.2g} s per iteration the {self.budget_minutes:.3g}-minute "
                        f"budget allows about {max(int(projected), iterations_done)} iterations; a U-Net rarely "
                        f"learns in fewer than {FEW_ITERATIONS} (docs/benchmarks.md). Give it "
                        f"more time, a smaller patch (--patch, or --min-iterations N to plan one) or network "
                        "(--net-args base_width=...)")
        return None
