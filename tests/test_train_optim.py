"""Optimisers: registry, convergence on a quadratic, Lookahead by hand, exact resume."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from voxseg.train.optim import OPTIMIZERS, Lookahead, Ranger, build_optimizer

# Rates that make each optimiser converge on the quadratic below in a few hundred steps.
LRS = {"sgd": 1e-3, "adam": 0.05, "adamw": 0.05, "adadelta": 1.0, "radam": 0.05, "ranger": 0.05}


def _quadratic_problem(seed: int = 0):
    """A kernel W (3x4) and a bias b (3) fitted to a random target by least squares."""
    g = torch.Generator().manual_seed(seed)
    w = nn.Parameter(torch.randn(3, 4, generator=g))
    b = nn.Parameter(torch.randn(3, generator=g))
    target_w = torch.randn(3, 4, generator=g)
    target_b = torch.randn(3, generator=g)

    def loss():
        return ((w - target_w) ** 2).sum() + ((b - target_b) ** 2).sum()

    return [w, b], loss


def _run(opt, params, loss_fn, steps):
    for _ in range(steps):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()


def test_registry_names_references_and_errors():
    assert set(OPTIMIZERS) == {"sgd", "adam", "adamw", "adadelta", "radam", "ranger"}
    for spec in OPTIMIZERS.values():
        assert spec.reference and spec.typical_lr > 0
    p = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match=r"unknown optimizer 'lion'; available: sgd"):
        build_optimizer("lion", p, 0.1)
    with pytest.raises(ValueError, match=r"optimizer 'sgd' has no option\(s\) betas; options: momentum"):
        build_optimizer("sgd", p, 0.1, betas=(0.9, 0.99))
    with pytest.raises(ValueError, match="learning rate must be positive"):
        build_optimizer("adam", p, 0.0)


def test_sgd_defaults_follow_nnunet():
    opt = build_optimizer("sgd", nn.Linear(2, 2), 0.01, weight_decay=3e-5)
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD)
    assert group["momentum"] == 0.99 and group["nesterov"] and group["weight_decay"] == 3e-5


@pytest.mark.parametrize("name", sorted(LRS))
def test_each_optimizer_reduces_a_quadratic(name):
    params, loss_fn = _quadratic_problem()
    start = float(loss_fn().detach())
    # Gradient centralization removes the row means of W's gradient, and Adam's per-element scaling
    # then lets those means drift with no force pulling them back: off for the convergence check.
    kw = {"gradient_centralization": False} if name == "ranger" else {}
    opt = build_optimizer(name, params, LRS[name], **kw)
    _run(opt, params, loss_fn, 1000 if name == "adadelta" else 300)  # Adadelta starts slowly (eps = 1e-6)
    assert float(loss_fn().detach()) < 0.05 * start, name


def test_lookahead_slow_weights_by_hand():
    # f(x) = x^2 / 2, SGD lr 0.1: every fast step multiplies x by 0.9. k = 2, alpha = 0.5, x0 = 1:
    # steps 1, 2 -> 0.9, 0.81; slow 1 + 0.5 (0.81 - 1) = 0.905 and x reset to it;
    # steps 3, 4 -> 0.8145, 0.73305; slow 0.905 + 0.5 (0.73305 - 0.905) = 0.819025.
    x = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = Lookahead(torch.optim.SGD([x], lr=0.1), k=2, alpha=0.5)
    seen, slow = [], []
    for _ in range(4):
        opt.zero_grad()
        (0.5 * x**2).sum().backward()
        opt.step()
        seen.append(float(x.detach()))
        slow.append(float(opt.state_dict()["slow"][0]))
    assert seen == pytest.approx([0.9, 0.905, 0.8145, 0.819025], abs=1e-12)
    assert slow == pytest.approx([1.0, 0.905, 0.905, 0.819025], abs=1e-12)


def test_ranger_slow_weights_move_only_every_k_steps():
    params, loss_fn = _quadratic_problem()
    opt = build_optimizer("ranger", params, 0.01)
    assert opt.k == 6 and opt.alpha == 0.5
    initial = [p.detach().clone() for p in params]
    for step in range(1, 13):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
        slow = opt.state_dict()["slow"]
        if step < 6:
            assert all(torch.equal(s, p0) for s, p0 in zip(slow, initial))
        if step % 6 == 0:  # synchronised: fast weights reset to the slow ones
            assert all(torch.equal(s, p) for s, p in zip(slow, params))
            assert not torch.equal(slow[0], initial[0])


def test_ranger_centralizes_kernel_gradients():
    # RAdam's first step (rho_1 <= 5) is lr * g; with gradient centralization every row of the
    # kernel update has zero mean, the bias update does not.
    params, loss_fn = _quadratic_problem()
    before = [p.detach().clone() for p in params]
    opt = Ranger(params, lr=0.01)
    opt.zero_grad()
    loss_fn().backward()
    opt.step()
    dw, db = params[0].detach() - before[0], params[1].detach() - before[1]
    assert dw.abs().max() > 0 and torch.allclose(dw.mean(1), torch.zeros(3), atol=1e-7)
    assert db.abs().sum() > 1e-4


def test_lookahead_shares_learning_rate_with_inner_optimizer():
    params, loss_fn = _quadratic_problem()
    opt = build_optimizer("ranger", params, 0.01)
    for group in opt.param_groups:
        group["lr"] = 0.0
    assert opt.optimizer.param_groups[0]["lr"] == 0.0
    before = [p.detach().clone() for p in params]
    _run(opt, params, loss_fn, 7)
    assert all(torch.equal(a, p) for a, p in zip(before, params))


@pytest.mark.parametrize("name", sorted(LRS))
def test_state_dict_round_trip_gives_identical_steps(name):
    params, loss_fn = _quadratic_problem()
    opt = build_optimizer(name, params, LRS[name], weight_decay=1e-3)
    _run(opt, params, loss_fn, 4)  # Ranger (k=6) resumes mid-cycle and synchronises after resume
    buf = io.BytesIO()
    torch.save({"params": [p.detach().clone() for p in params], "opt": opt.state_dict()}, buf)
    _run(opt, params, loss_fn, 5)
    expected = [p.detach().clone() for p in params]

    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    params2, loss_fn2 = _quadratic_problem()
    with torch.no_grad():
        for p, v in zip(params2, saved["params"]):
            p.copy_(v)
    opt2 = build_optimizer(name, params2, LRS[name], weight_decay=1e-3)
    opt2.load_state_dict(saved["opt"])
    _run(opt2, params2, loss_fn2, 5)
    assert all(torch.equal(a, b) for a, b in zip(expected, params2)), name


def test_lookahead_rejects_bad_settings_and_mismatched_state():
    p = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="k"):
        Lookahead(torch.optim.SGD(p, lr=0.1), k=0)
    with pytest.raises(ValueError, match="alpha"):
        Lookahead(torch.optim.SGD(p, lr=0.1), alpha=1.5)
    state = build_optimizer("ranger", p, 0.1).state_dict()
    other = build_optimizer("ranger", [nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1))], 0.1)
    with pytest.raises(ValueError, match="1 slow weights but the optimiser has 2 parameters"):
        other.load_state_dict(state)


def test_frozen_parameters_are_not_updated():
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    net[0].requires_grad_(False)
    frozen = net[0].weight.detach().clone()
    opt = build_optimizer("ranger", net, 0.01, weight_decay=0.1)
    for _ in range(7):
        opt.zero_grad()
        net(torch.ones(2, 3)).sum().backward()
        opt.step()
    assert torch.equal(frozen, net[0].weight)


def test_registered_state_copies_are_what_each_optimiser_keeps():
    # Memory planning counts these per parameter: the optimiser's own state after a step is the oracle.
    import torch

    from voxseg.train.optim import OPTIMIZERS, build_optimizer

    for name, spec in OPTIMIZERS.items():
        model = torch.nn.Linear(8, 8)
        optimizer = build_optimizer(name, model, spec.typical_lr)
        model(torch.randn(4, 8)).sum().backward()
        optimizer.step()
        weight = model.weight
        states = [optimizer.state[weight]]
        if hasattr(optimizer, "optimizer"):  # Lookahead (ranger): its slow weights, and its inner optimiser's
            states.append(optimizer.optimizer.state[weight])
        kept = [v for state in states for v in state.values() if torch.is_tensor(v) and v.shape == weight.shape]
        assert len(kept) == spec.state_copies, (name, [sorted(state) for state in states])
