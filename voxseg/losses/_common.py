"""Shared plumbing for the segmentation losses: target checks, one-hot encoding, float32 casting.

Private module: the public names live in the family modules (``dice.py``, ``tversky.py``, ...).
"""
from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("softmax", "sigmoid")


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(
            f"mode must be 'softmax' (mutually exclusive classes, integer class-index target) or 'sigmoid' "
            f"(overlapping regions, one 0/1 target channel per output channel), got {mode!r}"
        )
    return mode


class _Prepared(NamedTuple):
    logits: torch.Tensor  # (N, C, *spatial) float32
    probs: torch.Tensor  # (N, C, *spatial) float32, softmax or sigmoid of logits
    onehot: torch.Tensor  # (N, C, *spatial) float32 0/1 (or soft) target
    index: torch.Tensor | None  # (N, *spatial) int64 class indices (softmax mode with index targets)


def _prepare(logits: torch.Tensor, target: torch.Tensor, mode: str) -> _Prepared:
    """Check shapes, cast to float32 and encode the target as ``(N, C, *spatial)``."""
    if logits.ndim < 3:
        raise ValueError(f"logits must be (N, C, *spatial) with 1-3 spatial axes, got shape {tuple(logits.shape)}")
    logits = logits.float()
    n, c = logits.shape[:2]
    spatial = tuple(logits.shape[2:])
    index = None
    if mode == "softmax":
        if c < 2:
            raise ValueError(
                "mode='softmax' needs >= 2 output channels (background + classes); "
                "use mode='sigmoid' for a single foreground channel"
            )
        if target.shape == logits.shape and target.is_floating_point():
            onehot = target.float()  # already one-hot (or soft) (N, C, *spatial)
        else:
            if target.ndim == logits.ndim and target.shape[1] == 1:
                target = target[:, 0]
            if tuple(target.shape) != (n, *spatial):
                raise ValueError(
                    f"mode='softmax' expects a class-index target of shape (N, 1, *spatial) or (N, *spatial) = "
                    f"{(n, 1, *spatial)} for logits {tuple(logits.shape)}, got {tuple(target.shape)}"
                )
            if target.is_floating_point():
                if not torch.equal(target, target.round()):
                    raise ValueError("mode='softmax' expects integer class indices; the target has fractional values")
            index = target.long()
            lo, hi = int(index.min()), int(index.max())
            if lo < 0 or hi >= c:
                raise ValueError(
                    f"target class indices span [{lo}, {hi}] but the logits have {c} channels (valid 0..{c - 1})"
                )
            onehot = F.one_hot(index, c).movedim(-1, 1).float()
    else:
        if tuple(target.shape) != tuple(logits.shape):
            raise ValueError(
                f"mode='sigmoid' expects a 0/1 target with one channel per output channel, shape "
                f"{tuple(logits.shape)}, got {tuple(target.shape)}"
            )
        onehot = target.float()
    probs = torch.softmax(logits, 1) if mode == "softmax" else torch.sigmoid(logits)
    return _Prepared(logits, probs, onehot, index)


def _region_axes(ndim: int, batch_dice: bool) -> list[int]:
    """Axes summed for region statistics: spatial axes, plus the batch axis when ``batch_dice``."""
    axes = list(range(2, ndim))
    return [0, *axes] if batch_dice else axes


def _tp_fp_fn(probs: torch.Tensor, onehot: torch.Tensor, axes: list[int]) -> tuple[torch.Tensor, ...]:
    """Soft true positives, false positives and false negatives per (N, C) (or per C with batch sums)."""
    tp = (probs * onehot).sum(axes)
    fp = (probs * (1.0 - onehot)).sum(axes)
    fn = ((1.0 - probs) * onehot).sum(axes)
    return tp, fp, fn


class _SegLoss(nn.Module):
    """Base of every voxseg loss: validates ``mode`` and runs :meth:`_loss` in float32 without autocast.

    Subclasses implement ``_loss(logits, target) -> scalar tensor``.
    """

    family: ClassVar[str] = ""  # what a shared keyword such as ``alpha`` means for this loss

    def __init__(self, mode: str = "softmax"):
        super().__init__()
        self.mode = _check_mode(mode)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss for ``logits (N, C, *spatial)`` against ``target`` (see the class docstring); a scalar."""
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self._loss(logits, target)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _foreground(self, x: torch.Tensor, include_background: bool) -> torch.Tensor:
        """Drop channel 0 (background) in softmax mode unless ``include_background``."""
        if self.mode == "softmax" and not include_background:
            return x[:, 1:]
        return x


def _per_class(value, c: int, what: str, device: torch.device) -> torch.Tensor:
    """A length-``c`` float32 tensor from a sequence, checked."""
    t = torch.as_tensor(value, dtype=torch.float32, device=device).flatten()
    if t.numel() != c:
        raise ValueError(f"{what} has {t.numel()} values but the logits have {c} channels")
    if (t < 0).any():
        raise ValueError(f"{what} must be non-negative, got {t.tolist()}")
    return t
