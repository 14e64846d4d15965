"""The loss registry: name -> (reference, builder), ``build_loss`` and ``--loss-args`` parsing.

Adding a loss is one class in a family module, one line in ``compound.COMPONENTS`` and one
``LossSpec`` line here.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from voxseg.config.knobs import split_top_level  # the command line's key=value lists, re-exported here
from voxseg.losses.compound import COMPONENTS, CompoundLoss, build_component, parse_loss_spec

__all__ = ["LossSpec", "LOSSES", "build_loss", "parse_loss_args", "loss_table", "split_top_level"]


@dataclass(frozen=True)
class LossSpec:
    """A registered loss.

    Attributes:
        name: registry key, e.g. ``"dice+ce"``.
        reference: the paper the formula follows.
        builder: ``builder(mode=..., **kwargs) -> nn.Module``.
    """

    name: str
    reference: str
    builder: Callable[..., nn.Module]


_NNUNET = "Isensee et al., nnU-Net, Nat. Methods 18:203-211 (2021)"
_MILLETARI = "Milletari, Navab & Ahmadi, V-Net, 3DV 2016"
_SUDRE = "Sudre et al., Generalised Dice overlap, DLMIA 2017"
_LIN = "Lin et al., Focal Loss for Dense Object Detection, ICCV 2017"
_SALEHI = "Salehi, Erdogmus & Gholipour, Tversky loss, MLMI 2017 (alpha=FP, beta=FN)"
_ABRAHAM = "Abraham & Khan, Focal Tversky loss, ISBI 2019 (sum_c (1-TI_c)^(1/gamma))"


def _single(name: str) -> Callable[..., nn.Module]:
    return functools.partial(build_component, name)


def _compound(spec: str) -> Callable[..., nn.Module]:
    return functools.partial(CompoundLoss, spec)


LOSSES: dict[str, LossSpec] = {
    s.name: s
    for s in [
        LossSpec("dice", f"soft Dice, plain denominator sum p + sum g ({_NNUNET})", _single("dice")),
        LossSpec("dice_sq", f"soft Dice, squared denominator sum p^2 + sum g^2 ({_MILLETARI})", _single("dice_sq")),
        LossSpec("gdl", f"generalised Dice, weights 1/(sum g)^2 ({_SUDRE})", _single("gdl")),
        LossSpec("ce", "cross-entropy (softmax) / binary cross-entropy (sigmoid)", _single("ce")),
        LossSpec("focal", f"-alpha_t (1-p_t)^gamma log p_t ({_LIN})", _single("focal")),
        LossSpec("tversky", f"1 - TP/(TP + alpha FP + beta FN) ({_SALEHI})", _single("tversky")),
        LossSpec("focal_tversky", _ABRAHAM, _single("focal_tversky")),
        LossSpec("dice+ce", f"Dice + CE, weights 1:1, the default ({_NNUNET})", _compound("dice+ce")),
        LossSpec("dice+focal", f"Dice + focal ({_NNUNET}; {_LIN})", _compound("dice+focal")),
        LossSpec("dice+tversky", f"Dice + Tversky ({_SALEHI})", _compound("dice+tversky")),
        LossSpec("tversky+ce", f"Tversky + CE ({_SALEHI})", _compound("tversky+ce")),
    ]
}


def build_loss(name: str = "dice+ce", mode: str = "softmax", **kwargs) -> nn.Module:
    """Build a loss by registry name or spec string.

    Args:
        name: a key of :data:`LOSSES` or any spec ``CompoundLoss`` understands, e.g. ``"0.5*dice+1*ce"``.
        mode: ``"softmax"`` (target ``(N, 1, *spatial)`` int64 class indices) or ``"sigmoid"``
            (target ``(N, C, *spatial)`` float 0/1, overlapping regions such as BraTS WT/TC/ET).
        **kwargs: loss arguments (e.g. ``alpha=0.3, beta=0.7, gamma=1.33``), given to the component(s)
            that accept them; ``"tversky.alpha"``-style keys address one component.

    Returns:
        An ``nn.Module`` whose ``forward(logits, target)`` returns a scalar.

    Raises:
        ValueError: unknown name, unparsable spec, or an argument no component takes (or an ambiguous one).
    """
    if name in LOSSES:
        return LOSSES[name].builder(mode=mode, **kwargs)
    terms = parse_loss_spec(name)
    if len(terms) == 1 and terms[0][0] == 1.0:
        return build_component(terms[0][1], mode=mode, **kwargs)
    return CompoundLoss(name, mode=mode, **kwargs)


def _parse_value(text: str):
    lowered = {"true": True, "false": False, "none": None, "null": None}
    if text.lower() in lowered:
        return lowered[text.lower()]
    try:
        return json.loads(text.replace("(", "[").replace(")", "]"))
    except json.JSONDecodeError:
        return text


def parse_loss_args(text: str | None) -> dict:
    """``"alpha=0.3,beta=0.7,gamma=1.33" -> {"alpha": 0.3, "beta": 0.7, "gamma": 1.33}``.

    Values are numbers, ``true``/``false``, ``none`` or lists ``[1,2,3]``; anything else stays a
    string. Keys may be scoped (``"tversky.alpha=0.3"``). An empty string gives ``{}``.

    Raises:
        ValueError: an item without ``=``, an empty key or a repeated key.
    """
    out: dict = {}
    for item in split_top_level(text or ""):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"loss argument {item!r} is not of the form name=value (e.g. 'alpha=0.3,beta=0.7')")
        if key in out:
            raise ValueError(f"loss argument {key!r} given twice in {text!r}")
        out[key] = _parse_value(value.strip())
    return out


def loss_table() -> str:
    """A plain-text table of every registered loss and its reference (for ``voxseg losses``)."""
    width = max(len(n) for n in LOSSES)
    lines = [f"{'name'.ljust(width)}  reference", f"{'-' * width}  {'-' * 9}"]
    lines += [f"{s.name.ljust(width)}  {s.reference}" for s in LOSSES.values()]
    lines.append(f"(also any '+'-sum of {', '.join(sorted(COMPONENTS))} with weights, e.g. '0.5*dice+1*ce')")
    return "\n".join(lines)
