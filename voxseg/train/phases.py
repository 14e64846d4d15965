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
from collections.abc import Callable

import numpy as np

from voxseg.config import TrainConfig
from voxseg.nets import shrink_longest_axis, smallest_patch_sides
from voxseg.train.schedules import PlateauScheduler, lr_factor
from voxseg.train.swa import swa_lr

__all__ = ["MAIN", "SWA", "DONE", "FEW_ITERATIONS", "REPLAN_RATIO", "Phases", "RunClock", "BudgetProjection",
           "replanned_patch"]

MAIN, SWA, DONE = "main", "swa", "done"
FEW_ITERATIONS = 200  # below this a budget-limited run gets a warning with its projected iteration count
PROJECT_AFTER = 8  # steps of a session, the first excluded, before an early projection
REPLAN_RATIO = 2.0
"""A first epoch slower than this many times the step planning measured may re-plan the patch."""


def _budget_seconds(minutes: float | None) -> float:
    return minutes * 60.0 if minutes else math.inf


class RunClock:
    """Seconds a run has trained, earlier sessions included, against its time budget.

    Args:
        budget_minutes: the time budget; None or 0: none (``budget_s`` is ``inf``).
        elapsed_before: seconds trained by earlier sessions (resume).
        now: the clock read, in seconds (a test passes a fake one).
    """

    def __init__(self, budget_minutes: float | None = None, elapsed_before: float = 0.0,
                 now: Callable[[], float] = time.perf_counter):
        self.budget_s = _budget_seconds(budget_minutes)
        self.elapsed_before = elapsed_before
        self._now = now
        self._t0 = now() - elapsed_before

    def seconds(self) -> float:
        """Seconds trained so far (earlier sessions included)."""
        return self._now() - self._t0

    def session_seconds(self) -> float:
        """Seconds of this session."""
        return self.seconds() - self.elapsed_before

    def spent(self, reserve_s: float = 0.0) -> bool:
        """The time budget is used up, but for ``reserve_s`` seconds kept for what must still run (the final
        validation)."""
        return self.seconds() >= self.budget_s - reserve_s


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
    """Projects, early in a session, how many iterations a time budget allows; says so when too few, and
    corrects itself when the first epoch's real rate says otherwise.

    The first step of a session warms up (allocation, kernel choice) and is not timed; the seconds per
    iteration are the median of the later steps' durations, so one slow step (a busy machine) does not decide.
    The projection is made at the end of the session's first epoch, or earlier once :data:`PROJECT_AFTER` steps
    are timed and a tenth of the budget is spent. When it was made early, the end of the first epoch projects
    again and says when the first projection was wrong. At the end of the first epoch, a rate far (over 2x)
    from the step time measured when planning (``planned_step_seconds``) is said with the iterations it buys.

    Args:
        budget_minutes: the run's time budget (None: nothing to project).
        planned_step_seconds: seconds per step measured when the run was planned (None: not measured).
        train_share: the part of the budget training steps may use (the rest is kept for validation,
            :data:`voxseg.train.validation.VALIDATION_SHARE`).
    """

    def __init__(self, budget_minutes: float | None, planned_step_seconds: float | None = None,
                 train_share: float = 1.0):
        self.budget_minutes = budget_minutes
        self.budget_s = _budget_seconds(budget_minutes)
        self.planned_step_seconds, self.train_share = planned_step_seconds, train_share
        self._ends: list[float] = []
        self._said: int | None = None  # the iterations a warning projected
        self._epoch_done = False
        self.first_epoch_seconds: float | None = None  # per iteration, median over the session's first epoch

    def after_step(self, iterations_done: int, elapsed_s: float, phase: str, last_of_epoch: bool = False
                   ) -> str | None:
        """Call after every step; returns what to say (a warning when the budget allows fewer than
        :data:`FEW_ITERATIONS` iterations, or a correction), at most once per projection, else None.

        Args:
            iterations_done: iterations of the run so far (earlier sessions included).
            elapsed_s: seconds of the run so far (``RunClock.seconds``).
            phase: the step's phase (the SWA phase has no budget to project).
            last_of_epoch: the step ends an epoch.
        """
        if self._epoch_done or phase == SWA or not math.isfinite(self.budget_s):
            return None
        self._ends.append(elapsed_s)
        durations = np.diff(self._ends)  # the first step (warm-up) has no duration here
        if last_of_epoch:
            self._epoch_done = True
            per_it = float(np.median(durations)) if len(durations) else elapsed_s - self._ends[0] or math.nan
            self.first_epoch_seconds = per_it
            return self._at_epoch_end(iterations_done, elapsed_s, per_it)
        early = len(durations) >= PROJECT_AFTER - 1 and elapsed_s - self._ends[0] >= 0.1 * self.budget_s
        if early and self._said is None:
            projected = self._projected(iterations_done, elapsed_s, float(np.median(durations)))
            if projected < FEW_ITERATIONS:
                self._said = projected
                return self._warning(float(np.median(durations)), projected)
        return None

    def _projected(self, iterations_done: int, elapsed_s: float, per_it: float) -> int:
        left = self.train_share * self.budget_s - elapsed_s
        return max(int(iterations_done + max(left, 0.0) / per_it), iterations_done)

    def _warning(self, per_it: float, projected: int) -> str:
        return (f"warning: at {per_it:.2g} s per iteration the {self.budget_minutes:.3g}-minute "
                f"budget allows about {projected} iterations; a U-Net rarely "
                f"learns in fewer than {FEW_ITERATIONS} (docs/benchmarks.md). Give it "
                f"more time, a smaller patch (--patch, or --min-iterations N to plan one) or network "
                "(--net-args base_width=...)")

    def _at_epoch_end(self, iterations_done: int, elapsed_s: float, per_it: float) -> str | None:
        if not math.isfinite(per_it) or per_it <= 0:
            return None
        projected = self._projected(iterations_done, elapsed_s, per_it)
        if self._said is not None:
            if projected < FEW_ITERATIONS:
                return None
            return (f"time: over the first epoch an iteration took {per_it:.2g} s: the budget allows about "
                    f"{projected} iterations, not the {self._said} warned about (its first steps were slow): "
                    "ignore that warning")
        if projected < FEW_ITERATIONS:
            self._said = projected
            return self._warning(per_it, projected)
        planned = self.planned_step_seconds
        if planned and not 0.5 <= per_it / planned <= 2.0:
            return (f"time: the first epoch ran at {per_it:.2g} s per iteration, against {planned:.2g} s measured "
                    f"when planning: the budget allows about {projected} iterations")
        return None


def replanned_patch(patch: list[int], divisor: list[int], seconds_per_step: float, seconds_left: float,
                    steps_wanted: int, min_side: int = 32) -> list[int]:
    """The patch (voxels, ``[pz, py, px]`` or ``[1, py, px]`` for a 2-D network) shrunk, longest axis first, one
    ``divisor`` step at a time (as planning shrinks it, :func:`voxseg.plan.fit_patch_to_time_budget`), until
    ``seconds_left`` hold ``steps_wanted`` steps, the step's seconds taken as proportional to the patch's voxels
    (``seconds_per_step`` measured at ``patch``); ``patch`` itself when it holds them, the smallest patch when
    none does."""
    two_d = len(divisor) == 2
    spatial = list(patch[1:] if two_d else patch)
    voxels = float(np.prod(spatial))
    floor = smallest_patch_sides(divisor, min_side)

    def holds(side: list[int]) -> bool:
        return seconds_per_step * float(np.prod(side)) / voxels * steps_wanted <= seconds_left

    while not holds(spatial) and shrink_longest_axis(spatial, divisor, floor):
        pass
    return [1, *spatial] if two_d else spatial
