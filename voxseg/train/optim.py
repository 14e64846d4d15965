"""Optimisers by name: a registry, ``build_optimizer`` and the Lookahead / Ranger wrappers.

Adding an optimiser is one builder function and one ``OptimizerSpec`` line in :data:`OPTIMIZERS`.
Every optimiser is a ``torch.optim.Optimizer`` whose ``param_groups[i]["lr"]`` is the rate used by the
next step, so the training loop sets the scheduled rate the same way for all of them, and whose
``state_dict()`` / ``load_state_dict()`` restore a run exactly (Lookahead's slow weights included).

Frozen parameters (``requires_grad=False``, see ``voxseg.nets.freeze_encoder``) may stay in the
optimiser: they get no gradient, and torch's optimisers skip parameters whose ``grad`` is None (no
update, no weight decay), so unfreezing them later needs no new optimiser.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["OptimizerSpec", "OPTIMIZERS", "build_optimizer", "Lookahead", "Ranger"]

_ZHANG = "Zhang, Lucas, Hinton & Ba, Lookahead Optimizer: k steps forward, 1 step back, NeurIPS 2019"
_LIU = "Liu et al., On the Variance of the Adaptive Learning Rate and Beyond (RAdam), ICLR 2020"
_YONG = "Yong et al., Gradient Centralization, ECCV 2020"


class Lookahead(torch.optim.Optimizer):
    """Lookahead: ``k`` steps of an inner optimiser, then one step of the slow weights towards them.

    Algorithm 1 of Zhang et al. (2019): slow weights ``phi`` start at the initial parameters; the inner
    ("fast") optimiser takes ``k`` steps from ``phi``; then ``phi <- phi + alpha * (theta_k - phi)`` and the
    fast weights are reset to ``phi``. The inner optimiser's own state (moments) is kept across the
    reset, as in the paper's default and Wright's Ranger.

    The wrapper shares the inner optimiser's ``param_groups`` (setting ``group["lr"]`` sets the inner
    rate). Slow weights are created at the first ``step()`` from the parameters at that moment.

    References:
        Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step back", NeurIPS 2019
        (arXiv:1907.08610).

    Args:
        optimizer: the inner optimiser (already built on the parameters).
        k: inner steps between two slow-weight updates. Default 6 (Ranger; the paper uses 5 or 10).
        alpha: slow-weight step size in (0, 1]. Default 0.5.

    Attributes:
        optimizer: the inner optimiser.
        k, alpha: as above.
        steps: inner steps taken so far (counted over the whole run, also across ``load_state_dict``).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 6, alpha: float = 0.5):
        if k < 1:
            raise ValueError(f"Lookahead k (inner steps per slow update) must be >= 1, got {k}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"Lookahead alpha (slow step size) must be in (0, 1], got {alpha}")
        self.optimizer = optimizer
        self.k = int(k)
        self.alpha = float(alpha)
        self.steps = 0
        super().__init__(optimizer.param_groups, optimizer.defaults)  # sets up torch's hook bookkeeping
        self.param_groups = optimizer.param_groups  # the same list: lr changes and new groups are shared

    def __getstate__(self) -> dict[str, Any]:  # torch's version keeps only defaults/state/param_groups
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):  # noqa: D102 - torch signature
        for p in self._params():
            if "slow" not in self.state[p]:
                self.state[p]["slow"] = p.detach().clone()
        with torch.enable_grad():
            loss = self.optimizer.step(closure) if closure is not None else self.optimizer.step()
        self.steps += 1
        if self.steps % self.k == 0:
            for p in self._params():
                slow = self.state[p]["slow"]
                slow.add_(p - slow, alpha=self.alpha)
                p.copy_(slow)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:  # noqa: D102
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:  # noqa: D102
        if hasattr(self, "optimizer") and self.param_groups is self.optimizer.param_groups:
            self.optimizer.add_param_group(param_group)  # shared list: the group appears here too
        else:  # during torch's __init__, which re-adds the inner groups (same dicts) to a scratch list
            super().add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        """The inner optimiser's state dict plus ``k``, ``alpha``, ``steps`` and the slow weights.

        ``slow`` lists one tensor (or None before the first step) per parameter, in group order.
        """
        slow = [self.state[p]["slow"].clone() if "slow" in self.state.get(p, {}) else None for p in self._params()]
        return {"base": self.optimizer.state_dict(), "k": self.k, "alpha": self.alpha, "steps": self.steps,
                "slow": slow}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (parameters must be in the same order)."""
        params = self._params()
        if len(state_dict["slow"]) != len(params):
            raise ValueError(f"Lookahead state has {len(state_dict['slow'])} slow weights but the optimiser "
                             f"has {len(params)} parameters")
        self.optimizer.load_state_dict(state_dict["base"])
        self.k, self.alpha, self.steps = int(state_dict["k"]), float(state_dict["alpha"]), int(state_dict["steps"])
        for p, slow in zip(params, state_dict["slow"]):
            if slow is None:
                self.state[p].pop("slow", None)
            else:
                self.state[p]["slow"] = slow.detach().to(device=p.device, dtype=p.dtype).clone()


def _centralize_gradients(params: Iterable[torch.Tensor]) -> None:
    """Gradient centralization (Yong et al. 2020): subtract, per output unit, the mean of the gradient.

    Applies to weights with more than one dimension (conv and linear kernels), in place:
    ``g[o] <- g[o] - mean(g[o])`` over every axis but the first (output channels). Biases and norm
    parameters (1-D) are left alone.
    """
    for p in params:
        if p.grad is not None and p.grad.ndim > 1:
            p.grad.sub_(p.grad.mean(dim=tuple(range(1, p.grad.ndim)), keepdim=True))


class Ranger(Lookahead):
    """Ranger: RAdam inside Lookahead, with gradient centralization (Wright's Ranger, 2019/2020).

    The optimiser of Henry et al. 2021 (pipeline A, ``lr=1e-4``, cosine decay after half the epochs).
    RAdam (Liu et al. 2020) rectifies Adam's adaptive rate while its variance estimate is unreliable
    (SGD with momentum for the first steps, when ``rho_t <= 5``); Lookahead (Zhang et al. 2019) with
    ``k=6, alpha=0.5``; gradient centralization (Yong et al. 2020) on conv/linear kernels before the
    RAdam step. Weight decay is decoupled (``p <- p - lr * wd * p``), as in Wright's code.

    References:
        Wright, "Ranger - a synergistic optimizer", 2019, github.com/lessw2020/Ranger-Deep-Learning-Optimizer.
        Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020.
        Zhang et al., "Lookahead Optimizer: k steps forward, 1 step back", NeurIPS 2019.
        Yong et al., "Gradient Centralization: A New Optimization Technique for Deep Neural Networks", ECCV 2020.

    Args:
        params: parameters or parameter groups.
        lr: learning rate. Default 1e-3 (Wright); Henry et al. (2021) use 1e-4.
        betas: RAdam moment decays. Default (0.95, 0.999) (Wright).
        eps: RAdam denominator term. Default 1e-5 (Wright).
        weight_decay: decoupled weight decay factor. Default 0.
        k, alpha: Lookahead settings. Default 6 and 0.5.
        gradient_centralization: centralize kernel gradients before each step. Default True (Ranger 2020).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.95, 0.999), eps: float = 1e-5,
                 weight_decay: float = 0.0, k: int = 6, alpha: float = 0.5, gradient_centralization: bool = True):
        inner = torch.optim.RAdam(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                  decoupled_weight_decay=True)
        super().__init__(inner, k=k, alpha=alpha)
        self.gradient_centralization = bool(gradient_centralization)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):  # noqa: D102
        loss = None
        if closure is not None:  # gradients must exist before they are centralized
            with torch.enable_grad():
                loss = closure()
        if self.gradient_centralization:
            _centralize_gradients(self._params())
        super().step()
        return loss


# ---------------------------------------------------------------- builders and registry


def _sgd(params, lr, weight_decay, momentum: float = 0.99, nesterov: bool = True, dampening: float = 0.0):
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, dampening=dampening,
                           weight_decay=weight_decay)


def _adam(params, lr, weight_decay, betas=(0.9, 0.999), eps: float = 1e-8, amsgrad: bool = False):
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


def _adamw(params, lr, weight_decay, betas=(0.9, 0.999), eps: float = 1e-8, amsgrad: bool = False):
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


def _adadelta(params, lr, weight_decay, rho: float = 0.9, eps: float = 1e-6):
    return torch.optim.Adadelta(params, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)


def _radam(params, lr, weight_decay, betas=(0.9, 0.999), eps: float = 1e-8, decoupled_weight_decay: bool = False):
    return torch.optim.RAdam(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                             decoupled_weight_decay=decoupled_weight_decay)


def _ranger(params, lr, weight_decay, betas=(0.95, 0.999), eps: float = 1e-5, k: int = 6, alpha: float = 0.5,
            gradient_centralization: bool = True):
    return Ranger(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, k=k, alpha=alpha,
                  gradient_centralization=gradient_centralization)


@dataclass(frozen=True)
class OptimizerSpec:
    """A registered optimiser.

    Attributes:
        name: registry key (``TrainConfig.optimizer``).
        reference: the paper (and code) the update follows.
        builder: ``builder(params, lr, weight_decay, **options) -> torch.optim.Optimizer``.
        typical_lr: a sensible initial learning rate (documentation; the plan chooses).
        notes: how ``weight_decay`` acts and other remarks.
        options: keyword options ``build_optimizer`` accepts for it (read from the builder's signature).
        state_copies: parameter-sized tensors of state it keeps per parameter (SGD's momentum 1, Adam's
            moments 2, Ranger's moments and Lookahead's slow weights 3), for memory planning.
    """

    name: str
    reference: str
    builder: Callable[..., torch.optim.Optimizer]
    typical_lr: float
    notes: str = ""
    options: tuple[str, ...] = field(default=(), compare=False)
    state_copies: int = 2


def _spec(name, reference, builder, typical_lr, notes="", state_copies=2) -> OptimizerSpec:
    options = tuple(p for p in inspect.signature(builder).parameters if p not in ("params", "lr", "weight_decay"))
    return OptimizerSpec(name, reference, builder, typical_lr, notes, options, state_copies)


OPTIMIZERS: dict[str, OptimizerSpec] = {
    s.name: s
    for s in [
        _spec("sgd", "Nesterov momentum 0.99 as nnU-Net (Isensee et al., Nat. Methods 2021); Sutskever et al., "
              "ICML 2013", _sgd, 1e-2, "weight_decay: L2 added to the gradient", state_copies=1),
        _spec("adam", "Kingma & Ba, Adam, ICLR 2015", _adam, 1e-4, "weight_decay: L2 added to the gradient"),
        _spec("adamw", "Loshchilov & Hutter, Decoupled Weight Decay Regularization, ICLR 2019", _adamw, 1e-4,
              "weight_decay: decoupled, p <- p - lr * wd * p"),
        _spec("adadelta", "Zeiler, ADADELTA: An Adaptive Learning Rate Method, arXiv:1212.5701 (2012)", _adadelta,
              1.0, "lr scales the Adadelta update (1.0 = the paper's method)"),
        _spec("radam", _LIU, _radam, 1e-3, "weight_decay: L2 unless decoupled_weight_decay=True"),
        _spec("ranger", f"RAdam + Lookahead (k=6, alpha=0.5) + gradient centralization, Wright 2019 ({_LIU}; "
              f"{_ZHANG}; {_YONG}); as trained by Henry et al. 2021", _ranger, 1e-3,
              "weight_decay: decoupled; Henry et al. 2021 use lr 1e-4", state_copies=3),
    ]
}


def build_optimizer(name: str, params: Iterable[torch.Tensor] | Iterable[dict] | nn.Module, lr: float,
                    weight_decay: float = 0.0, **kwargs: Any) -> torch.optim.Optimizer:
    """Build an optimiser by registry name.

    Args:
        name: a key of :data:`OPTIMIZERS`: ``"sgd"``, ``"adam"``, ``"adamw"``, ``"adadelta"``, ``"radam"``,
            ``"ranger"``.
        params: parameters, parameter groups (dicts, e.g. a smaller rate for a pre-trained encoder), or
            a module (its ``parameters()``).
        lr: initial learning rate (per step; the loop rescales it with the schedule every iteration).
        weight_decay: weight decay factor (how it acts: see ``OPTIMIZERS[name].notes``). Default 0.
        **kwargs: options of the chosen optimiser, e.g. ``momentum=0.9`` (sgd), ``betas=(0.9, 0.99)``
            (adam family), ``k=5, alpha=0.8, gradient_centralization=False`` (ranger).

    Returns:
        A ``torch.optim.Optimizer``.

    Raises:
        ValueError: unknown name, unknown option or a non-positive learning rate.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; available: {', '.join(OPTIMIZERS)}")
    spec = OPTIMIZERS[name]
    unknown = sorted(set(kwargs) - set(spec.options))
    if unknown:
        raise ValueError(f"optimizer {name!r} has no option(s) {', '.join(unknown)}; options: "
                         f"{', '.join(spec.options) or 'none'}")
    if not lr > 0:
        raise ValueError(f"learning rate must be positive, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if isinstance(params, nn.Module):
        params = params.parameters()
    return spec.builder(params, lr=lr, weight_decay=weight_decay, **kwargs)
