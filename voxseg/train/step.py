"""One optimisation step: forward under autocast, loss, backward, gradient clipping, update.

Mixed precision: the forward runs under :func:`voxseg.nets.autocast_context` (bf16, or fp16 on CUDA);
float16 on CUDA also scales the loss against gradient underflow (``torch.amp.GradScaler``; a disabled scaler
is a no-op). The loss is computed in float32.

Non-finite policy: a step whose loss or gradients are NaN or infinite would make every weight NaN for good,
so its update is skipped (fp16's scaler skips such steps itself) and counted; one bad batch costs one step,
not the run. ``diverged_after`` non-finite losses in a row raise :class:`TrainingDiverged`: such a run will
not recover by itself. Under DDP the ranks agree: a loss that is not finite on any rank counts on every rank
(so they stop together and none waits), and the gradients, averaged across ranks, are the same everywhere.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from voxseg.losses import DeepSupervisionLoss
from voxseg.nets import autocast_context, resolve_amp
from voxseg.train.distributed import on_any_rank

__all__ = ["DIVERGED_AFTER", "TrainStep", "TrainingDiverged", "grad_scaler"]

DIVERGED_AFTER = 10  # non-finite losses in a row that end a run


class TrainingDiverged(RuntimeError):
    """The loss was not finite for ``in_a_row`` steps in a row (the last one included)."""

    def __init__(self, in_a_row: int):
        super().__init__(f"the loss was not finite for {in_a_row} steps in a row")
        self.in_a_row = in_a_row


def grad_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler:
    """The loss scaler for ``amp`` on ``device``: enabled for float16 on CUDA only."""
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and resolve_amp(amp, device) == "fp16")


class TrainStep:
    """A callable making one optimisation step of ``net`` on a batch; it keeps the count of skipped steps.

    Args:
        net: the network to run (a model, or its ``DistributedDataParallel`` wrapper).
        optimizer: its optimiser (the learning rate of every group is set at each call).
        loss_fn: ``(logits (B, K, *S) float32, targets) -> scalar loss``.
        amp: ``"none"``, ``"bf16"``, ``"fp16"`` or ``"auto"`` (see ``voxseg.nets.resolve_amp``).
        device: where ``net`` lives.
        grad_clip: clip the global gradient norm (L2) to this; None or 0: no clipping.
        deep_supervision: the network returns a list of outputs (finest first), weighted by
            :class:`voxseg.losses.DeepSupervisionLoss`.
        world: DDP world size (1: a single process).
        scaler: the loss scaler; default :func:`grad_scaler` for ``amp`` (pass one to restore its state first).
        diverged_after: non-finite losses in a row that raise :class:`TrainingDiverged`.

    Attributes:
        scaler: the loss scaler (its state goes into the checkpoint).
        not_finite_in_a_row: consecutive steps, up to the last, whose loss was not finite.
        skipped: steps whose update was skipped because the gradients were not finite (without fp16 scaling).
    """

    def __init__(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable, *,
                 amp: str = "none", device: torch.device | str = "cpu", grad_clip: float | None = None,
                 deep_supervision: bool = False, world: int = 1, scaler: torch.amp.GradScaler | None = None,
                 diverged_after: int = DIVERGED_AFTER):
        self.net, self.optimizer, self.loss_fn = net, optimizer, loss_fn
        self.amp, self.device = amp, torch.device(device)
        self.grad_clip, self.deep_supervision, self.world = grad_clip, deep_supervision, world
        self.scaler = scaler if scaler is not None else grad_scaler(amp, self.device)
        self.diverged_after = diverged_after
        self.not_finite_in_a_row = 0
        self.skipped = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> float:
        """One step on the batch ``x`` ``(B, C, *S)`` with targets ``y`` at learning rate ``lr``.

        Returns:
            The loss (NaN or infinite when it was not finite; its update was then skipped).

        Raises:
            TrainingDiverged: this was the ``diverged_after``-th non-finite loss in a row (nothing was updated).
        """
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        with autocast_context(self.amp, self.device):
            out = self.net(x)
        loss = self._loss(out, y)
        value = float(loss.detach())  # one device sync per step
        if on_any_rank(not math.isfinite(value), self.world, self.device):
            self.not_finite_in_a_row += 1
            if self.not_finite_in_a_row >= self.diverged_after:
                raise TrainingDiverged(self.not_finite_in_a_row)
        else:
            self.not_finite_in_a_row = 0
        self.scaler.scale(loss).backward()  # every rank, always: DDP averages gradients across ranks here
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip or math.inf)
        if self.scaler.is_enabled() or math.isfinite(float(grad_norm)):
            self.scaler.step(self.optimizer)
        else:
            self.skipped += 1
        self.scaler.update()
        return value

    def _loss(self, out, y: torch.Tensor) -> torch.Tensor:
        if self.deep_supervision and isinstance(out, (list, tuple)):
            return DeepSupervisionLoss(self.loss_fn, len(out))([o.float() for o in out], y)
        return self.loss_fn(out.float(), y)
