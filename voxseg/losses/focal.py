"""Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from voxseg.losses._common import _per_class, _prepare, _SegLoss

__all__ = ["FocalLoss"]


class FocalLoss(_SegLoss):
    """Focal loss, Lin et al. 2017, eq. 5: ``FL(p_t) = -alpha_t * (1 - p_t)^gamma * log(p_t)``.

    ``p_t`` is the probability given to the true class; the factor ``(1 - p_t)^gamma`` (exponent
    ``gamma``, *not* ``1/gamma`` - Archit & Adilina (2022) write it differently; we follow the paper)
    down-weights voxels that are already well classified. ``gamma = 0`` and ``alpha = None`` give
    plain cross-entropy. The loss is averaged over voxels (softmax) or over voxels and channels (sigmoid).

    ``alpha_t``:

    * ``mode="sigmoid"``: ``alpha`` for target 1, ``1 - alpha`` for target 0 (the paper's binary case);
    * ``mode="softmax"``: a float gives ``1 - alpha`` to class 0 (background) and ``alpha`` to every
      other class (the multi-class extension MONAI also uses); a sequence gives one weight per class;
    * ``None``: no weighting (``alpha_t = 1``).

    Note that the paper's best setting, ``gamma=2, alpha=0.25``, *down*-weights the foreground: the
    focusing term already favours it.

    Args:
        mode: ``"softmax"`` or ``"sigmoid"`` (targets as in :class:`voxseg.losses.SoftDiceLoss`).
        gamma: focusing parameter ``>= 0``; default 2 (paper).
        alpha: balancing weight as above; default 0.25 (paper).
    """

    family = "focal"

    def __init__(self, mode: str = "softmax", gamma: float = 2.0, alpha: float | Sequence[float] | None = 0.25):
        super().__init__(mode)
        if gamma < 0:
            raise ValueError(f"FocalLoss gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        if alpha is not None and not isinstance(alpha, (int, float)):
            alpha = [float(a) for a in alpha]
        elif alpha is not None:
            alpha = float(alpha)
            if not 0.0 <= alpha <= 1.0:
                raise ValueError(f"FocalLoss alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prep = _prepare(logits, target, self.mode)
        x, g = prep.logits, prep.onehot
        c = x.shape[1]
        if self.mode == "softmax":
            log_p = F.log_softmax(x, 1)
            log_pt = (log_p * g).sum(1)  # (N, *spatial); soft targets give the expected value
            pt = log_pt.exp()
            if self.alpha is None:
                alpha_t = 1.0
            else:
                if isinstance(self.alpha, float):
                    per_class = torch.full((c,), self.alpha, device=x.device)
                    per_class[0] = 1.0 - self.alpha
                else:
                    per_class = _per_class(self.alpha, c, "FocalLoss alpha", x.device)
                alpha_t = (g * per_class.view(1, c, *([1] * (x.ndim - 2)))).sum(1)
            loss = -alpha_t * (1.0 - pt).clamp_min(0.0).pow(self.gamma) * log_pt
            return loss.mean()
        # sigmoid: numerically stable log(p_t) = logsigmoid(+-x)
        sign = 2.0 * g - 1.0
        log_pt = F.logsigmoid(sign * x)
        one_minus_pt = torch.sigmoid(-sign * x)
        if self.alpha is None:
            alpha_t = 1.0
        elif isinstance(self.alpha, float):
            alpha_t = self.alpha * g + (1.0 - self.alpha) * (1.0 - g)
        else:
            a = _per_class(self.alpha, c, "FocalLoss alpha", x.device).view(1, c, *([1] * (x.ndim - 2)))
            alpha_t = a * g + (1.0 - a) * (1.0 - g)
        return (-alpha_t * one_minus_pt.pow(self.gamma) * log_pt).mean()
