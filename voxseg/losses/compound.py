"""Weighted sums of losses from a spec string such as ``"dice+ce"`` or ``"0.5*dice+1*ce"``.

Component names (``COMPONENTS``): ``dice`` (soft Dice), ``dice_sq`` (Milletari's squared
denominator), ``gdl`` (generalised Dice), ``ce`` (cross-entropy; binary CE in sigmoid mode; alias
``bce``), ``focal``, ``tversky``, ``focal_tversky``.

Keyword arguments go to every component whose constructor accepts them (``mode``, ``batch_dice``,
``smooth``, ...). A keyword that means different things in different losses (``alpha`` is the
focal balancing weight *and* the Tversky false-positive weight; ``gamma`` is the focal exponent
*and* focal-Tversky's ``1/gamma``) must then be scoped with the component name:
``{"focal.alpha": 0.25, "tversky.alpha": 0.3}``.
"""
from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable

import torch
from torch import nn

from voxseg.losses._common import _check_mode
from voxseg.losses.crossentropy import CrossEntropyLoss
from voxseg.losses.dice import GeneralizedDiceLoss, SoftDiceLoss
from voxseg.losses.focal import FocalLoss
from voxseg.losses.tversky import FocalTverskyLoss, TverskyLoss

__all__ = ["COMPONENTS", "CompoundLoss", "parse_loss_spec", "build_component"]

COMPONENTS: dict[str, Callable[..., nn.Module]] = {
    "dice": SoftDiceLoss,
    "dice_sq": functools.partial(SoftDiceLoss, squared_denominator=True),
    "gdl": GeneralizedDiceLoss,
    "ce": CrossEntropyLoss,
    "bce": CrossEntropyLoss,
    "focal": FocalLoss,
    "tversky": TverskyLoss,
    "focal_tversky": FocalTverskyLoss,
}

_FAMILY_SPECIFIC = frozenset({"alpha", "beta", "gamma", "weight"})  # meaning depends on the loss family

_TERM = re.compile(r"^\s*(?:(?P<w>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*\s*)?(?P<name>[a-z_]+)\s*$")


def parse_loss_spec(spec: str) -> list[tuple[float, str]]:
    """``"0.5*dice+ce" -> [(0.5, "dice"), (1.0, "ce")]``; raises ValueError on unknown or repeated names."""
    terms: list[tuple[float, str]] = []
    for part in spec.split("+"):
        m = _TERM.match(part)
        if m is None:
            raise ValueError(f"cannot parse loss term {part!r} in {spec!r}; expected e.g. 'dice+ce' or '0.5*dice+1*ce'")
        name = m["name"]
        if name not in COMPONENTS:
            raise ValueError(f"unknown loss {name!r} in {spec!r}; known: {', '.join(sorted(COMPONENTS))}")
        if any(n == name for _, n in terms):
            raise ValueError(f"loss {name!r} appears twice in {spec!r}; give it one weight instead")
        terms.append((float(m["w"]) if m["w"] is not None else 1.0, name))
    return terms


def _accepted(builder: Callable[..., nn.Module]) -> set[str]:
    target = builder.func if isinstance(builder, functools.partial) else builder
    params = set(inspect.signature(target).parameters) - {"self"}
    if isinstance(builder, functools.partial):
        params -= set(builder.keywords)
    return params


def _family(builder: Callable[..., nn.Module]) -> str:
    target = builder.func if isinstance(builder, functools.partial) else builder
    return getattr(target, "family", target.__name__)


def _route_kwargs(names: list[str], kwargs: dict) -> dict[str, dict]:
    """Split ``kwargs`` between components (see the module docstring)."""
    routed: dict[str, dict] = {n: {} for n in names}
    for key, value in kwargs.items():
        if "." in key:
            comp, arg = key.split(".", 1)
            if comp not in routed:
                raise ValueError(f"loss argument {key!r} names {comp!r}, which is not in the loss ({'+'.join(names)})")
            if arg not in _accepted(COMPONENTS[comp]):
                accepted = sorted(_accepted(COMPONENTS[comp]))
                raise ValueError(f"loss {comp!r} takes no argument {arg!r}; it takes {accepted}")
            routed[comp][arg] = value
            continue
        takers = [n for n in names if key in _accepted(COMPONENTS[n])]
        if not takers:
            raise ValueError(f"no part of the loss {'+'.join(names)!r} takes argument {key!r}")
        families = {_family(COMPONENTS[n]) for n in takers}
        if len(families) > 1 and key in _FAMILY_SPECIFIC:
            scoped = ", ".join(f"{n}.{key}=..." for n in takers)
            raise ValueError(f"argument {key!r} means different things in {', '.join(takers)}; write {scoped}")
        for n in takers:
            routed[n][key] = value
    return routed


def build_component(name: str, mode: str = "softmax", **kwargs) -> nn.Module:
    """One loss of ``COMPONENTS`` by name, e.g. ``build_component("tversky", "sigmoid", alpha=0.3)``."""
    if name not in COMPONENTS:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(sorted(COMPONENTS))}")
    (args,) = _route_kwargs([name], kwargs).values()
    return COMPONENTS[name](mode=mode, **args)


class CompoundLoss(nn.Module):
    """``sum_k w_k * loss_k`` from a spec string.

    The default ``"dice+ce"`` is nnU-Net's loss (Isensee et al., Nat. Methods 2021): soft Dice
    without background plus cross-entropy, weights 1:1 (Dice + binary CE in sigmoid mode, as nnU-Net's
    region-based training). Other useful specs: ``"dice+focal"``, ``"dice+tversky"``, ``"tversky+ce"``,
    ``"0.5*dice+1*ce"``.

    Args:
        spec: ``'+'``-separated terms ``[weight*]name`` with names from :data:`COMPONENTS`.
        mode: ``"softmax"`` or ``"sigmoid"``, passed to every component.
        **kwargs: component arguments, routed as explained in the module docstring.

    Attributes:
        terms: ``[(weight, name), ...]`` in spec order.
        losses: ``nn.ModuleDict`` name -> loss module.
    """

    def __init__(self, spec: str = "dice+ce", mode: str = "softmax", **kwargs):
        super().__init__()
        self.mode = _check_mode(mode)
        self.spec = spec
        self.terms = parse_loss_spec(spec)
        routed = _route_kwargs([n for _, n in self.terms], kwargs)
        self.losses = nn.ModuleDict({n: COMPONENTS[n](mode=mode, **routed[n]) for _, n in self.terms})

    def components(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each unweighted term, name -> scalar tensor (for logging)."""
        return {n: self.losses[n](logits, target) for _, n in self.terms}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Weighted sum of the terms for ``logits (N, C, *spatial)`` and the mode's target; a scalar."""
        values = self.components(logits, target)
        return sum(w * values[n] for w, n in self.terms)

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}, mode={self.mode!r}"
