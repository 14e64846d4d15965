"""Dice-family losses: soft Dice (plain and squared denominator) and generalised Dice.

Shapes: ``logits (N, C, *spatial)`` with 1-3 spatial axes; ``target`` is ``(N, 1, *spatial)`` or
``(N, *spatial)`` int64 class indices when ``mode="softmax"``, ``(N, C, *spatial)`` float 0/1 when
``mode="sigmoid"``. All arithmetic is float32, whatever the dtype of the logits.
"""
from __future__ import annotations

import torch

from voxseg.losses._common import _prepare, _region_axes, _SegLoss

__all__ = ["SoftDiceLoss", "GeneralizedDiceLoss"]


class SoftDiceLoss(_SegLoss):
    """Soft Dice loss, ``1 - mean_c D_c``.

    Plain (default, as in nnU-Net, Isensee et al., Nat. Methods 18:203-211, 2021)::

        D_c = (2 * sum p*g + smooth) / (sum p + sum g + smooth)

    Squared denominator (``squared_denominator=True``; V-Net, Milletari et al., 3DV 2016,
    also "pipeline A" of Henry et al. 2021)::

        D_c = (2 * sum p*g + smooth) / (sum p^2 + sum g^2 + smooth)

    ``p`` are softmax (``mode="softmax"``) or sigmoid (``mode="sigmoid"``) probabilities, ``g`` the
    one-hot / 0-1 target; sums run over the spatial axes of each sample (and over the batch too when
    ``batch_dice``). ``D_c`` is then averaged over channels and samples.

    Args:
        mode: ``"softmax"`` (mutually exclusive classes) or ``"sigmoid"`` (overlapping regions).
        batch_dice: sum the statistics over the whole batch as if it were one volume (nnU-Net's
            ``batch_dice``); default per sample.
        include_background: softmax mode only: also score channel 0. Default ``False`` (nnU-Net's
            ``do_bg=False``). In sigmoid mode every channel is a foreground region and is always scored.
        smooth: added to numerator and denominator; an empty prediction of an empty class scores 1.
        squared_denominator: use Milletari's ``sum p^2 + sum g^2`` denominator.
    """

    family = "dice"

    def __init__(
        self,
        mode: str = "softmax",
        batch_dice: bool = False,
        include_background: bool = False,
        smooth: float = 1e-5,
        squared_denominator: bool = False,
    ):
        super().__init__(mode)
        self.batch_dice = batch_dice
        self.include_background = include_background
        self.smooth = float(smooth)
        self.squared_denominator = squared_denominator

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prep = _prepare(logits, target, self.mode)
        p = self._foreground(prep.probs, self.include_background)
        g = self._foreground(prep.onehot, self.include_background)
        axes = _region_axes(p.ndim, self.batch_dice)
        intersection = (p * g).sum(axes)
        if self.squared_denominator:
            denominator = (p * p).sum(axes) + (g * g).sum(axes)
        else:
            denominator = p.sum(axes) + g.sum(axes)
        dice = (2.0 * intersection + self.smooth) / (denominator + self.smooth)
        return 1.0 - dice.mean()


class GeneralizedDiceLoss(_SegLoss):
    """Generalised Dice loss (Sudre et al., DLMIA 2017)::

        GDL = 1 - 2 * sum_c w_c sum_i p_ci g_ci / sum_c w_c sum_i (p_ci + g_ci),  w_c = 1 / (sum_i g_ci)^2

    The class weights ``w_c`` make every class contribute about equally however small it is. Two
    implementation choices (not in the paper, both documented here):

    * a class absent from the target has ``w_c = inf``; it gets the largest finite weight of the other
      classes instead (as MONAI does), so predicting it is still penalised;
    * the weights are normalised to sum to 1 per sample before ``smooth`` is added, which leaves the
      ratio unchanged but stops ``smooth`` from dominating on large volumes (``1/(sum g)^2`` can be ~1e-10).

    Args:
        mode: ``"softmax"`` or ``"sigmoid"`` (see :class:`SoftDiceLoss`).
        batch_dice: sum the statistics (and the weights' volumes) over the batch.
        include_background: softmax mode only; default ``False`` like the other Dice losses (Sudre et
            al. score the background too: pass ``True`` for the paper's setting).
        smooth: added to numerator and denominator.
    """

    family = "dice"

    def __init__(
        self, mode: str = "softmax", batch_dice: bool = False, include_background: bool = False, smooth: float = 1e-5
    ):
        super().__init__(mode)
        self.batch_dice = batch_dice
        self.include_background = include_background
        self.smooth = float(smooth)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prep = _prepare(logits, target, self.mode)
        p = self._foreground(prep.probs, self.include_background)
        g = self._foreground(prep.onehot, self.include_background)
        axes = _region_axes(p.ndim, self.batch_dice)
        intersection = (p * g).sum(axes)  # (N, C) or (C,)
        denominator = p.sum(axes) + g.sum(axes)
        w = 1.0 / g.sum(axes).square()
        absent = torch.isinf(w)
        w = torch.where(absent, torch.zeros_like(w), w)
        w = torch.where(absent, w.amax(-1, keepdim=True), w)
        w = w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
        gdl = 1.0 - (2.0 * (w * intersection).sum(-1) + self.smooth) / ((w * denominator).sum(-1) + self.smooth)
        return gdl.mean()
