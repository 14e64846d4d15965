"""Early stopping on a validation metric, with state for resume."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["EarlyStopping"]


class EarlyStopping:
    """Stop when a validation metric has not improved for ``patience`` validations.

    A value improves when it beats the best so far by more than ``min_delta``
    (``value > best + min_delta`` in max mode, ``value < best - min_delta`` in min mode). NaN never
    improves. ``update`` returns True once ``patience`` consecutive values have not improved; it keeps
    returning True afterwards (``stopped``). Counting is per ``update`` call, i.e. per validation: with
    ``TrainConfig.val_every = 5`` a patience of 20 means 100 epochs.

    Keras' ``EarlyStopping`` rule (Chollet et al.); Prechelt, "Early Stopping - But When?", in Neural
    Networks: Tricks of the Trade, 1998 (the "patience" criterion).

    Args:
        metric: the key of the validation row this watches (``update`` accepts that row). Default
            ``"val_dice_mean"``.
        mode: ``"max"`` (Dice) or ``"min"`` (a loss). Default ``"max"``.
        patience: validations without improvement before stopping, >= 1. Default 20.
        min_delta: smallest change that counts as an improvement (metric units), >= 0. Default 0.

    Attributes:
        best: best value so far (``-inf``/``inf`` before the first update).
        best_update: 1-based index of the update that gave ``best`` (0 before the first).
        updates: number of ``update`` calls.
        num_bad: consecutive updates without improvement.
        stopped: True once the criterion was met.
    """

    def __init__(self, metric: str = "val_dice_mean", mode: str = "max", patience: int = 20, min_delta: float = 0.0):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        self.metric, self.mode, self.patience, self.min_delta = metric, mode, int(patience), float(min_delta)
        self.best = -math.inf if mode == "max" else math.inf
        self.best_update = 0
        self.updates = 0
        self.num_bad = 0
        self.stopped = False

    def improves(self, value: float) -> bool:
        """Whether ``value`` would count as an improvement over :attr:`best` (no state change)."""
        if math.isnan(value):
            return False
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def update(self, value: float | Mapping[str, Any]) -> bool:
        """Record one validation result.

        Args:
            value: the metric value, or a validation row (dict) holding it under :attr:`metric`.

        Returns:
            True when training should stop.

        Raises:
            KeyError: a row without :attr:`metric`.
        """
        if isinstance(value, Mapping):
            if self.metric not in value:
                raise KeyError(f"early stopping watches {self.metric!r}, which the row lacks "
                               f"(keys: {', '.join(map(str, value))})")
            value = value[self.metric]
        value = float(value)
        self.updates += 1
        if self.improves(value):
            self.best, self.best_update, self.num_bad = value, self.updates, 0
        else:
            self.num_bad += 1
        if self.num_bad >= self.patience:
            self.stopped = True
        return self.stopped

    def state_dict(self) -> dict[str, Any]:
        """Every attribute (plain numbers and strings), for a checkpoint."""
        return dict(vars(self))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        unknown = set(state) - set(vars(self))
        if unknown:
            raise ValueError(f"not an EarlyStopping state: unexpected key(s) {', '.join(sorted(unknown))}")
        self.__dict__.update(state)
