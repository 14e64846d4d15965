"""Stochastic weight averaging (SWA) as Henry et al. (2021) run it after the main training.

Henry et al. (2021, pipeline A), after 200 epochs of Ranger: the learning rate is restored to half its
initial value and decays with a cosine over 30 epochs; this cycle is repeated 5 times (150 epochs);
the weights are saved every 3 epochs and all saved weights are averaged into a "self-ensembled"
model. Adam without weight decay is the optimiser of this phase. The procedure follows fast SWA
(Athiwaratkun et al. 2019), itself built on SWA (Izmailov et al. 2018).

Pieces here, composed by the training loop:

* :func:`swa_lr` - the rate of the phase (restarts at ``restart_fraction * base_lr`` every cycle);
* :class:`SWACollector` - keeps a float32 running mean of the parameters, one snapshot every
  ``every_k_epochs`` epochs of the phase (no list of snapshots in memory);
* :func:`recompute_norm_statistics` - batch-norm running statistics of the averaged weights, which
  the averages of the snapshots' statistics are not (Izmailov et al. 2018, section 3.2).

The loop saves ``collector.averaged_model()`` (after the statistics pass) as a separate checkpoint,
e.g. ``checkpoint_swa.pt``, and the collector's ``state_dict()`` in ``checkpoint_last.pt`` for resume.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from voxseg.train.schedules import cosine

__all__ = ["SWACollector", "recompute_norm_statistics", "swa_lr"]


def swa_lr(t_in_phase: float, base_lr: float, cycles: int = 5, restart_fraction: float = 0.5) -> float:
    """Learning rate of the SWA phase: ``cycles`` cosine decays, each restarting at ``restart_fraction * base_lr``.

    Henry et al. (2021): ``base_lr = 1e-4``, restarts at ``5e-5``, 5 cycles of 30 epochs; with snapshots every
    3 epochs that is 10 snapshots per cycle. Equals ``restart_fraction * base_lr *
    cosine(t_in_phase, restarts=cycles - 1)``.

    Args:
        t_in_phase: fraction of the SWA phase done, in [0, 1] (by epochs or time, as the main schedule).
        base_lr: the initial learning rate of the main training.
        cycles: number of cosine cycles in the phase, >= 1. Default 5.
        restart_fraction: rate at each restart relative to ``base_lr``. Default 0.5.

    Returns:
        The learning rate (same unit as ``base_lr``).
    """
    if cycles < 1:
        raise ValueError(f"cycles must be >= 1, got {cycles}")
    return restart_fraction * base_lr * cosine(t_in_phase, restarts=cycles - 1)


def _averaged_names(model: nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if p.is_floating_point()]


class SWACollector:
    """Running float32 average of a model's parameters over snapshots taken every ``k`` epochs.

    After ``n`` snapshots ``w_1 .. w_n`` the average is ``mean(w_i)``, updated in place as
    ``avg <- avg + (w - avg) / n`` (float32 whatever the model's dtype). Buffers (batch-norm running
    statistics) are not averaged: :meth:`averaged_model` takes them from the model at that moment, and
    :func:`recompute_norm_statistics` must be run on the result when the network has batch norm.

    Args:
        model: the model being trained (read at each snapshot; not modified).
        every_k_epochs: take a snapshot after every ``k``-th epoch of the SWA phase. Default 3 (Henry et al. 2021).

    Attributes:
        n_averaged: number of snapshots in the average.
        every_k_epochs: as above.
    """

    def __init__(self, model: nn.Module, every_k_epochs: int = 3):
        if every_k_epochs < 1:
            raise ValueError(f"every_k_epochs must be >= 1, got {every_k_epochs}")
        self.model = model
        self.every_k_epochs = int(every_k_epochs)
        self.n_averaged = 0
        self._names = _averaged_names(model)
        self._average: dict[str, torch.Tensor] = {}

    def epoch_end(self, epochs_done_in_phase: int, last: bool = False) -> bool:
        """Call after each epoch of the SWA phase; snapshots when ``epochs_done_in_phase % k == 0``, and after
        the phase's last epoch when no snapshot was taken yet (a phase shorter than ``k`` epochs produced
        nothing before).

        Args:
            epochs_done_in_phase: epochs completed since the SWA phase began (1 after the first).
            last: this was the phase's last epoch.

        Returns:
            Whether a snapshot was taken.
        """
        if epochs_done_in_phase > 0 and (epochs_done_in_phase % self.every_k_epochs == 0
                                         or (last and not self.n_averaged)):
            self.collect()
            return True
        return False

    @torch.no_grad()
    def collect(self) -> None:
        """Add the model's current parameters to the running average."""
        params = dict(self.model.named_parameters())
        self.n_averaged += 1
        for name in self._names:
            w = params[name].detach().to(device="cpu", dtype=torch.float32)
            if name not in self._average:
                self._average[name] = w.clone()
            else:
                avg = self._average[name]
                avg.add_(w - avg, alpha=1.0 / self.n_averaged)

    def average(self) -> dict[str, torch.Tensor]:
        """The averaged parameters (float32, CPU), by parameter name (a copy)."""
        if not self.n_averaged:
            raise RuntimeError("no SWA snapshot collected yet")
        return {k: v.clone() for k, v in self._average.items()}

    @torch.no_grad()
    def averaged_model(self) -> nn.Module:
        """A deep copy of the model carrying the averaged parameters (each in its parameter's dtype).

        Buffers are the model's current ones: recompute batch-norm statistics with
        :func:`recompute_norm_statistics` before using or saving it.
        """
        avg = self.average()
        out = copy.deepcopy(self.model)
        for name, p in out.named_parameters():
            if name in avg:
                p.copy_(avg[name].to(device=p.device, dtype=p.dtype))
        return out

    def state_dict(self) -> dict[str, Any]:
        """``n_averaged``, ``every_k_epochs`` and the float32 averages, for ``checkpoint_last.pt``."""
        return {"n_averaged": self.n_averaged, "every_k_epochs": self.every_k_epochs,
                "average": {k: v.clone() for k, v in self._average.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (the model must have the same parameter names)."""
        missing = set(state["average"]) ^ (set(self._names) if state["n_averaged"] else set())
        if missing:
            raise ValueError(f"SWA state does not match the model; differing parameters: "
                             f"{', '.join(sorted(missing)[:5])}")
        self.n_averaged = int(state["n_averaged"])
        self.every_k_epochs = int(state["every_k_epochs"])
        self._average = {k: v.detach().to(device="cpu", dtype=torch.float32).clone()
                         for k, v in state["average"].items()}


@torch.no_grad()
def recompute_norm_statistics(model: nn.Module, batches: Iterable[Any], device: torch.device | str | None = None
                              ) -> nn.Module:
    """Recompute batch-norm running statistics by a forward pass over ``batches`` (in place).

    Like ``torch.optim.swa_utils.update_bn``: running means/variances of every batch-norm layer that
    is in training mode after ``model.train()`` are reset, then accumulated as a cumulative (equal
    weight per batch) average over the batches - the mean of the per-batch means and of the per-batch
    unbiased variances. Layers kept in eval mode (norms of frozen encoder stages, see
    ``voxseg.nets.freeze_encoder``) keep their statistics. The model's mode and momenta are restored.

    Instance norm (the voxseg default) and group norm normalise with statistics of the sample itself
    and keep no running statistics: nothing to recompute, and the function returns at once.

    Args:
        model: the network (e.g. :meth:`SWACollector.averaged_model`).
        batches: iterable of input batches ``(N, C, *S)``, or tuples/lists/dicts whose first item
            (dict: key ``"image"``) is the input; training patches are the natural choice.
        device: device to move the inputs to. Default: the device of the model's first parameter.

    Returns:
        The model (same object).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return model
    was_training = model.training
    model.train()
    active = [m for m in norms if m.training]  # frozen stages' norms stay in eval mode
    momenta = {m: m.momentum for m in active}
    for m in active:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    try:
        for batch in batches:
            if isinstance(batch, dict):
                batch = batch["image"]
            elif isinstance(batch, (list, tuple)):
                batch = batch[0]
            model(torch.as_tensor(batch).to(device))
    finally:
        for m in active:
            m.momentum = momenta[m]
        model.train(was_training)
    return model
