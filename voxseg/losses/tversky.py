"""Tversky and focal-Tversky losses.

Convention (Salehi et al. 2017, everywhere in voxseg): ``alpha`` weights FALSE POSITIVES and
``beta`` weights FALSE NEGATIVES. Archit & Adilina (2022) write them the other way round (``alpha*FN +
beta*FP``); we follow the paper. Abraham & Khan (2019) name the same two weights the other way
round too (their ``alpha`` multiplies ``sum (1-p) g``, the false negatives); their ``alpha=0.7,
beta=0.3`` is our ``alpha=0.3, beta=0.7``.
"""
from __future__ import annotations

import torch

from voxseg.losses._common import _prepare, _region_axes, _SegLoss, _tp_fp_fn

__all__ = ["TverskyLoss", "FocalTverskyLoss"]


class _TverskyBase(_SegLoss):
    family = "tversky"

    def __init__(
        self,
        mode: str = "softmax",
        alpha: float = 0.3,
        beta: float = 0.7,
        batch_dice: bool = False,
        include_background: bool = False,
        smooth: float = 1e-5,
    ):
        super().__init__(mode)
        if alpha < 0 or beta < 0:
            raise ValueError(f"Tversky alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.batch_dice = batch_dice
        self.include_background = include_background
        self.smooth = float(smooth)

    def _tversky_index(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``TI`` per (N, C), or per C with ``batch_dice``."""
        prep = _prepare(logits, target, self.mode)
        p = self._foreground(prep.probs, self.include_background)
        g = self._foreground(prep.onehot, self.include_background)
        tp, fp, fn = _tp_fp_fn(p, g, _region_axes(p.ndim, self.batch_dice))
        return (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)


class TverskyLoss(_TverskyBase):
    """Tversky loss (Salehi, Erdogmus & Gholipour, MLMI 2017): ``1 - mean_c TI_c`` with::

        TI_c = (TP + smooth) / (TP + alpha * FP + beta * FN + smooth)
        TP = sum p*g,  FP = sum p*(1-g),  FN = sum (1-p)*g      (soft counts per class)

    ``alpha`` weights false positives, ``beta`` false negatives (the paper's convention; Archit &
    Adilina 2022 swap them). ``alpha = beta = 0.5`` is the soft Dice; the paper's best ``alpha=0.3, beta=0.7``
    (the default) penalises missed voxels more, which helps small lesions.

    Args:
        mode: ``"softmax"`` or ``"sigmoid"`` (targets as in :class:`voxseg.losses.SoftDiceLoss`).
        alpha: weight of false positives.
        beta: weight of false negatives.
        batch_dice: sum the counts over the batch.
        include_background: softmax mode only; default ``False``.
        smooth: added to numerator and denominator.
    """

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1.0 - self._tversky_index(logits, target).mean()


class FocalTverskyLoss(_TverskyBase):
    """Focal Tversky loss (Abraham & Khan, ISBI 2019): ``FTL = sum_c (1 - TI_c)^(1/gamma)``.

    ``TI_c`` is the Tversky index of :class:`TverskyLoss` (``alpha`` on false positives, ``beta`` on
    false negatives). The exponent is ``1/gamma`` with ``gamma`` in ``[1, 3]`` (paper's best 4/3, the
    default); Archit & Adilina (2022) write ``(1 - TL)^gamma``, we follow the paper. ``gamma = 1`` gives the
    sum over classes of the Tversky loss. As in the paper the class terms are *summed* (so the value
    scales with the number of scored channels), then averaged over samples.

    ``1 - TI`` is clamped at 1e-6 before the power so the gradient stays finite at a perfect
    prediction (``d/dx x^(3/4)`` is infinite at 0).

    Args:
        mode: ``"softmax"`` or ``"sigmoid"``.
        alpha: weight of false positives (Salehi convention; Abraham & Khan's ``beta``).
        beta: weight of false negatives (Abraham & Khan's ``alpha``).
        gamma: focal parameter; exponent ``1/gamma``. Must be in ``[1, 3]``.
        batch_dice: sum the counts over the batch.
        include_background: softmax mode only; default ``False``.
        smooth: added to numerator and denominator of ``TI``.
    """

    def __init__(
        self,
        mode: str = "softmax",
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 4.0 / 3.0,
        batch_dice: bool = False,
        include_background: bool = False,
        smooth: float = 1e-5,
    ):
        super().__init__(mode, alpha, beta, batch_dice, include_background, smooth)
        if not 1.0 <= gamma <= 3.0:
            raise ValueError(f"FocalTverskyLoss gamma must be in [1, 3] (exponent 1/gamma), got {gamma}")
        self.gamma = float(gamma)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ti = self._tversky_index(logits, target)
        terms = (1.0 - ti).clamp_min(1e-6).pow(1.0 / self.gamma)
        return terms.sum(-1).mean()
