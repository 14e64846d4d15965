"""Gradient checkpointing: same outputs, gradients and batch-norm statistics as a plain forward/backward."""
from __future__ import annotations

import pytest
import torch

from voxseg.nets import build_network

SMALL = {"base_width": 4, "depth": 3}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pair(name: str, dims: int, **kw):
    torch.manual_seed(0)
    plain = build_network(name, dims, 2, 3, **{**SMALL, **kw})
    torch.manual_seed(0)
    ckpt = build_network(name, dims, 2, 3, gradient_checkpointing=True, **{**SMALL, **kw})
    assert ckpt.gradient_checkpointing and not plain.gradient_checkpointing
    return plain.train(), ckpt.train()


def _step(net, x):
    torch.manual_seed(7)  # same dropout masks
    out = net(x)
    outs = out if isinstance(out, list) else [out]
    loss = sum((o.float() ** 2).mean() for o in outs)
    loss.backward()
    return [o.detach() for o in outs], {n: p.grad.clone() for n, p in net.named_parameters()}


@pytest.mark.parametrize(
    "name,dims,kw",
    [
        ("unet", 3, {}),
        ("nnunet3d", 3, {}),  # deep supervision
        ("cicek3d", 3, {}),  # batch norm
        ("unet", 2, {"block": "residual", "attention": "gate", "dropout": 0.3, "dropout_where": "both"}),
    ],
)
def test_outputs_and_gradients_equal_with_and_without_checkpointing(name, dims, kw):
    plain, ckpt = _pair(name, dims, **kw)
    x = torch.randn(2, 2, *([16] * dims), generator=torch.Generator().manual_seed(1))
    out_a, grad_a = _step(plain, x)
    out_b, grad_b = _step(ckpt, x)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(out_a, out_b))
    for n in grad_a:
        assert torch.allclose(grad_a[n], grad_b[n], atol=1e-6, rtol=1e-5), n
    # batch-norm running statistics updated once, not twice by the recomputation
    for (n, a), b in zip(plain.named_buffers(), ckpt.buffers()):
        assert torch.allclose(a.float(), b.float(), atol=1e-7), n


def test_eval_and_no_grad_run_plainly():
    _, ckpt = _pair("unet", 3)
    x = torch.randn(1, 2, 16, 16, 16)
    with torch.no_grad():
        a = ckpt(x)
    b = ckpt.eval()(x)
    assert torch.equal(a, b) and b.grad_fn is not None
