"""Deep supervision: one loss over the decoder's outputs at several resolutions."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from voxseg.losses._common import _check_mode

__all__ = ["DeepSupervisionLoss", "deep_supervision_weights", "downsample_target"]


def deep_supervision_weights(n_outputs: int, drop_lowest: bool = True) -> tuple[float, ...]:
    """Weights ``1/2^i`` for outputs ``i = 0`` (full resolution) ... ``n_outputs-1``, normalised to sum 1.

    With ``drop_lowest`` (nnU-Net's choice, Isensee et al. 2021) the lowest-resolution output gets
    weight 0, because its target is too coarse to be useful; with a single output it keeps weight 1.
    Example: ``n_outputs=4`` -> ``(8/14, 4/14, 2/14, 0)`` with ``drop_lowest``, ``(8/15, 4/15, 2/15, 1/15)`` without.
    """
    if n_outputs < 1:
        raise ValueError(f"n_outputs must be >= 1, got {n_outputs}")
    w = [1.0 / 2**i for i in range(n_outputs)]
    if drop_lowest and n_outputs > 1:
        w[-1] = 0.0
    total = sum(w)
    return tuple(x / total for x in w)


def downsample_target(target: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    """Shrink a target to the spatial ``size`` of a lower-resolution output.

    Args:
        target: ``(N, 1, *spatial)`` / ``(N, *spatial)`` int class indices (``mode="softmax"``) or
            ``(N, C, *spatial)`` 0/1 (``mode="sigmoid"``).
        size: the output's spatial shape.
        mode: ``"softmax"``: nearest-neighbour sampling (labels are never averaged or invented);
            ``"sigmoid"``: max pooling over each cell (a region present anywhere in the cell stays present).

    Returns:
        The target at ``size``, same layout and dtype as the input.
    """
    _check_mode(mode)
    size = tuple(int(s) for s in size)
    if mode == "softmax":
        squeeze = target.ndim == len(size) + 1  # (N, *spatial)
        t = target.unsqueeze(1) if squeeze else target
        if tuple(t.shape[2:]) == size:
            return target
        out = F.interpolate(t.float(), size=size, mode="nearest").to(target.dtype)
        return out[:, 0] if squeeze else out
    if tuple(target.shape[2:]) == size:
        return target
    pool = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}[len(size)]
    return pool(target.float(), size).to(target.dtype)


class DeepSupervisionLoss(nn.Module):
    """``sum_i w_i * loss(outputs[i], target_i)`` over the outputs of a deeply supervised network.

    Outputs are ordered from full resolution (index 0) to the coarsest. The single full-resolution
    target is shrunk to each output's size with :func:`downsample_target` (nearest for class indices,
    max pooling for sigmoid 0/1 targets); a list of ready-made targets may be given instead. Outputs
    with weight 0 are not evaluated.

    Args:
        loss: the loss applied at every resolution (needs a ``mode`` attribute unless ``mode`` is given).
        n_outputs: number of network outputs.
        weights: explicit weights (normalised to sum 1); default :func:`deep_supervision_weights`.
        drop_lowest: for the default weights: give the coarsest output weight 0 as nnU-Net does.
        mode: ``"softmax"``/``"sigmoid"`` for the target downsampling; default ``loss.mode``.
    """

    def __init__(
        self,
        loss: nn.Module,
        n_outputs: int,
        weights: Sequence[float] | None = None,
        drop_lowest: bool = True,
        mode: str | None = None,
    ):
        super().__init__()
        self.loss = loss
        self.mode = _check_mode(mode if mode is not None else getattr(loss, "mode", "softmax"))
        if weights is None:
            self.weights = deep_supervision_weights(n_outputs, drop_lowest)
        else:
            if len(weights) != n_outputs or any(w < 0 for w in weights) or sum(weights) <= 0:
                raise ValueError(f"need {n_outputs} non-negative weights with a positive sum, got {list(weights)}")
            total = float(sum(weights))
            self.weights = tuple(float(w) / total for w in weights)

    def forward(
        self, outputs: Sequence[torch.Tensor] | torch.Tensor, target: torch.Tensor | Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Weighted loss; ``outputs`` is a sequence of ``(N, C, *spatial_i)`` logits (a single tensor is
        scored alone with weight 1)."""
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target if isinstance(target, torch.Tensor) else target[0])
        if len(outputs) != len(self.weights):
            raise ValueError(f"expected {len(self.weights)} outputs, got {len(outputs)}")
        if not isinstance(target, torch.Tensor) and len(target) != len(outputs):
            raise ValueError(f"got {len(target)} targets for {len(outputs)} outputs")
        total = None
        for i, (w, out) in enumerate(zip(self.weights, outputs)):
            if w == 0.0:
                continue
            t = downsample_target(target, out.shape[2:], self.mode) if isinstance(target, torch.Tensor) else target[i]
            term = w * self.loss(out, t)
            total = term if total is None else total + term
        return total

    def extra_repr(self) -> str:
        return f"weights={tuple(round(w, 4) for w in self.weights)}, mode={self.mode!r}"
