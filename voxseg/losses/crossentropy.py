"""Voxel-wise cross-entropy: softmax CE for exclusive classes, binary CE for overlapping regions."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from voxseg.losses._common import _per_class, _prepare, _SegLoss

__all__ = ["CrossEntropyLoss"]


class CrossEntropyLoss(_SegLoss):
    """Cross-entropy averaged over voxels, softmax or sigmoid (binary CE per channel).

    ``mode="softmax"``: ``-sum_c g_c log p_c`` per voxel with ``p = softmax(logits)``, the multinomial
    logistic loss used by U-Net (Ronneberger et al., MICCAI 2015) and nnU-Net. With ``weight`` it is
    PyTorch's weighted mean ``sum_i w_{y_i} l_i / sum_i w_{y_i}``.

    ``mode="sigmoid"``: ``-(g log p + (1-g) log(1-p))`` per voxel and channel with ``p = sigmoid(logits)``,
    averaged over all ``N*C*voxels``; ``weight`` scales each channel's terms (plain mean, not renormalised).

    Args:
        mode: ``"softmax"`` (target ``(N, 1, *spatial)``/``(N, *spatial)`` int64) or ``"sigmoid"``
            (target ``(N, C, *spatial)`` float 0/1).
        weight: optional per-class (softmax) / per-channel (sigmoid) weights, length ``C``.
    """

    family = "ce"

    def __init__(self, mode: str = "softmax", weight: Sequence[float] | None = None):
        super().__init__(mode)
        self.weight = None if weight is None else [float(w) for w in weight]

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prep = _prepare(logits, target, self.mode)
        c = prep.logits.shape[1]
        w = None if self.weight is None else _per_class(self.weight, c, "CrossEntropyLoss weight", logits.device)
        if self.mode == "softmax":
            ce_target = prep.index if prep.index is not None else prep.onehot
            return F.cross_entropy(prep.logits, ce_target, weight=w)
        if w is not None:
            w = w.view(1, c, *([1] * (prep.logits.ndim - 2)))
        return F.binary_cross_entropy_with_logits(prep.logits, prep.onehot, weight=w)
