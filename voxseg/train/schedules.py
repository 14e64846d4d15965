"""Learning-rate schedules as pure functions of the fraction of the run done, and a plateau scheduler.

A schedule maps ``t`` in [0, 1] (the fraction of the run done: of the epochs, or of the time budget
when that ends first, as the training loop measures it) to a factor of the initial learning rate:
``lr = base_lr * lr_factor(name, t, **kwargs)``. Values of ``t`` outside [0, 1] are clipped. Because the
schedules see only ``t``, the same schedule stretches over an epoch budget or a time budget.

Adding a schedule is one function and one ``ScheduleSpec`` line in :data:`SCHEDULES`.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["poly", "cosine", "flat_cosine", "constant", "ScheduleSpec", "SCHEDULES", "lr_factor",
           "PlateauScheduler"]


def _clip(t: float) -> float:
    return min(max(float(t), 0.0), 1.0)


def poly(t: float, power: float = 0.9) -> float:
    """Polynomial decay ``(1 - t)^power`` (nnU-Net's schedule with power 0.9).

    Hand values (power 0.9): ``poly(0) = 1``, ``poly(0.5) = 0.5^0.9 = 0.5359``, ``poly(1) = 0``.

    References:
        Chen et al., DeepLab, TPAMI 2018 ("poly" policy); Isensee et al., nnU-Net, Nat. Methods 2021.

    Args:
        t: fraction of the run done, in [0, 1].
        power: exponent. Default 0.9.

    Returns:
        Factor of the initial learning rate, in [0, 1].
    """
    return (1.0 - _clip(t)) ** power


def cosine(t: float, warmup: float = 0.0, restarts: int = 0, restart_decay: float = 1.0,
           cycle_mult: float = 1.0) -> float:
    """Cosine annealing with linear warm-up and warm restarts (SGDR).

    The first ``warmup`` of the run rises linearly from 0 to 1. The rest is split into ``restarts + 1``
    cycles; cycle ``i`` lasts ``cycle_mult`` times as long as cycle ``i - 1`` (SGDR's ``T_mult``) and
    follows ``peak_i * (1 + cos(pi * u)) / 2`` for ``u`` in [0, 1) its position in the cycle, with
    ``peak_i = restart_decay ** i``. At a restart point the factor jumps back to ``peak_i``; at ``t = 1``
    it is 0.

    Hand values: ``cosine(0.5) = 0.5``; ``cosine(0.1, warmup=0.1) = 1``; with ``restarts=1``:
    ``cosine(0.25) = 0.5``, ``cosine(0.5) = 1`` (restart), ``cosine(0.75) = 0.5``; with
    ``restart_decay=0.5`` the second cycle peaks at 0.5.

    References:
        Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017.
        Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017 (linear warm-up).

    Args:
        t: fraction of the run done, in [0, 1].
        warmup: fraction of the run spent warming up, in [0, 1). Default 0.
        restarts: number of warm restarts (0: a single cosine decay). Default 0.
        restart_decay: peak of each cycle relative to the previous one. Default 1.
        cycle_mult: length of each cycle relative to the previous one (SGDR ``T_mult``). Default 1.

    Returns:
        Factor of the initial learning rate, in [0, 1].
    """
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"warmup must be a fraction of the run in [0, 1), got {warmup}")
    if restarts < 0 or cycle_mult <= 0 or restart_decay < 0:
        raise ValueError("restarts must be >= 0, cycle_mult > 0 and restart_decay >= 0")
    t = _clip(t)
    if t < warmup:
        return t / warmup
    if t >= 1.0:
        return 0.0
    lengths = [cycle_mult**i for i in range(restarts + 1)]  # in units of the first cycle
    x = (t - warmup) / (1.0 - warmup) * sum(lengths)  # position in the annealing part
    start = 0.0
    for i, length in enumerate(lengths):
        # a position within 1e-9 cycles of a restart is the restart (t = k / n is not exact in floats)
        if x < start + length - 1e-9 or i == restarts:
            u = min(max((x - start) / length, 0.0), 1.0)
            return restart_decay**i * 0.5 * (1.0 + math.cos(math.pi * u))
        start += length
    return 0.0  # unreachable


def flat_cosine(t: float, flat_fraction: float = 0.72) -> float:
    """Flat, then cosine annealing to 0: 1 for ``t < flat_fraction``, then a half cosine.

    The schedule Ranger users train with: Wright's Ranger + Mish ImageWoof runs (fast.ai, 2019) hold
    the rate for 72 % of the run (fastai's ``fit_flat_cos`` defaults to 75 %). Henry et al. (2021) keep
    ``1e-4`` for 100 of 200 epochs, then decays: ``flat_fraction=0.5``.

    Hand values (0.72): ``flat_cosine(0.5) = 1``, ``flat_cosine(0.86) = 0.5``, ``flat_cosine(1) = 0``.

    Args:
        t: fraction of the run done, in [0, 1].
        flat_fraction: fraction of the run at the full rate, in [0, 1). Default 0.72.

    Returns:
        Factor of the initial learning rate, in [0, 1].
    """
    if not 0.0 <= flat_fraction < 1.0:
        raise ValueError(f"flat_fraction must be in [0, 1), got {flat_fraction}")
    t = _clip(t)
    if t < flat_fraction:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * (t - flat_fraction) / (1.0 - flat_fraction)))


def constant(t: float) -> float:
    """Constant rate: 1 for every ``t`` (with a :class:`PlateauScheduler`, the plateau decides)."""
    return 1.0


@dataclass(frozen=True)
class ScheduleSpec:
    """A registered schedule.

    Attributes:
        name: registry key.
        reference: where the schedule comes from.
        fn: ``fn(t, **kwargs) -> factor`` with ``t`` in [0, 1].
    """

    name: str
    reference: str
    fn: Callable[..., float]


SCHEDULES: dict[str, ScheduleSpec] = {
    s.name: s
    for s in [
        ScheduleSpec("poly", "(1 - t)^0.9, nnU-Net (Isensee et al., Nat. Methods 2021), the default", poly),
        ScheduleSpec("cosine", "cosine with linear warm-up and warm restarts, SGDR (Loshchilov & Hutter, "
                     "ICLR 2017)", cosine),
        ScheduleSpec("flat_cosine", "flat then cosine annealing, as Ranger users (Wright 2019); Henry et al. 2021 "
                     "(flat_fraction=0.5)", flat_cosine),
        ScheduleSpec("constant", "constant rate (use with PlateauScheduler)", constant),
    ]
}


def lr_factor(name: str, t: float, **kwargs: Any) -> float:
    """Factor of the initial learning rate of schedule ``name`` at run fraction ``t``.

    Args:
        name: a key of :data:`SCHEDULES`.
        t: fraction of the run done, in [0, 1] (clipped).
        **kwargs: options of the schedule (e.g. ``power=0.9``, ``warmup=0.05, restarts=2``).

    Raises:
        ValueError: unknown schedule or option.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; available: {', '.join(SCHEDULES)}")
    fn = SCHEDULES[name].fn
    options = [p for p in inspect.signature(fn).parameters if p != "t"]
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise ValueError(f"schedule {name!r} has no option(s) {', '.join(unknown)}; options: "
                         f"{', '.join(options) or 'none'}")
    return fn(t, **kwargs)


class PlateauScheduler:
    """Multiply the learning rate by ``factor`` when a validation metric stops improving.

    Mirrors ``torch.optim.lr_scheduler.ReduceLROnPlateau`` (same counting, threshold, cooldown and
    ``eps`` rules) but holds the rate itself instead of writing into an optimiser, so the loop can
    combine it with a schedule: ``lr = plateau.lr * lr_factor(...)`` (use ``"constant"`` for the plateau
    alone), then set every ``group["lr"]``.

    Rule: a value is an improvement when it beats the best so far by more than ``threshold``
    (relative: ``best * (1 + threshold)`` in max mode; absolute: ``best + threshold``). After more than
    ``patience`` consecutive non-improving values the rate becomes ``max(lr * factor, min_lr)`` (skipped
    if that changes it by ``eps`` or less) and ``cooldown`` values are ignored.

    Args:
        lr: initial learning rate.
        factor: multiplier at each reduction, in (0, 1). Default 0.5.
        patience: non-improving values tolerated before a reduction (counts ``step`` calls, i.e.
            validations, not epochs). Default 10.
        min_lr: lower bound of the rate. Default 0.
        mode: ``"max"`` (e.g. Dice) or ``"min"`` (e.g. a loss). Default ``"max"``.
        threshold: minimum improvement. Default 1e-4.
        threshold_mode: ``"rel"`` or ``"abs"``. Default ``"rel"``.
        cooldown: values ignored after a reduction. Default 0.
        eps: smallest change of the rate that is applied. Default 1e-8.

    Attributes:
        lr: the current learning rate.
        best: best value seen (``inf``/``-inf`` before the first).
        num_bad: consecutive non-improving values.
    """

    def __init__(self, lr: float, factor: float = 0.5, patience: int = 10, min_lr: float = 0.0, mode: str = "max",
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0, eps: float = 1e-8):
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.lr = float(lr)
        self.factor, self.patience, self.min_lr = float(factor), int(patience), float(min_lr)
        self.mode, self.threshold, self.threshold_mode = mode, float(threshold), threshold_mode
        self.cooldown, self.eps = int(cooldown), float(eps)
        self.best = -math.inf if mode == "max" else math.inf
        self.num_bad = 0
        self.cooldown_counter = 0

    def _better(self, value: float) -> bool:
        if self.mode == "max":
            ref = self.best * (1.0 + self.threshold) if self.threshold_mode == "rel" else self.best + self.threshold
            return value > ref
        ref = self.best * (1.0 - self.threshold) if self.threshold_mode == "rel" else self.best - self.threshold
        return value < ref

    def step(self, value: float) -> float:
        """Record one validation value; return the (possibly reduced) learning rate.

        A NaN value counts as not improving.
        """
        value = float(value)
        if not math.isnan(value) and self._better(value):
            self.best, self.num_bad = value, 0
        else:
            self.num_bad += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad = 0
        if self.num_bad > self.patience:
            new_lr = max(self.lr * self.factor, self.min_lr)
            if self.lr - new_lr > self.eps:
                self.lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad = 0
        return self.lr

    def state_dict(self) -> dict[str, Any]:
        """Every attribute (plain numbers and strings), for a checkpoint."""
        return dict(vars(self))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        unknown = set(state) - set(vars(self))
        if unknown:
            raise ValueError(f"not a PlateauScheduler state: unexpected key(s) {', '.join(sorted(unknown))}")
        self.__dict__.update(state)
