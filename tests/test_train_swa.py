"""Stochastic weight averaging: running mean of snapshots, batch-norm statistics, SWA-phase rate, resume."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from voxseg.nets import build_network, freeze_encoder
from voxseg.train.swa import SWACollector, recompute_norm_statistics, swa_lr


def _set_params(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.full_like(p, value * (i + 1)))


def test_average_of_three_snapshots_is_their_mean():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    swa = SWACollector(model, every_k_epochs=1)
    snapshots = []
    for value in (1.0, 2.0, 6.0):
        _set_params(model, value)
        snapshots.append({k: v.clone() for k, v in model.named_parameters()})
        swa.collect()
    assert swa.n_averaged == 3
    avg = swa.average()
    for name in avg:
        expected = torch.stack([s[name].detach() for s in snapshots]).mean(0)
        assert torch.allclose(avg[name], expected, atol=1e-6)  # 3 * (i + 1) for parameter i
        assert avg[name].dtype == torch.float32
    averaged = swa.averaged_model()
    assert averaged is not model
    for (name, p), q in zip(averaged.named_parameters(), model.parameters()):
        assert torch.allclose(p, avg[name]) and not torch.allclose(q, avg[name])
    assert float(model[0].weight.detach().flatten()[0]) == 6.0  # the trained model is untouched


def test_snapshots_every_k_epochs_and_half_precision_model():
    model = nn.Linear(2, 2).to(torch.bfloat16)
    swa = SWACollector(model, every_k_epochs=3)
    taken = [swa.epoch_end(e) for e in range(1, 10)]
    assert taken == [False, False, True] * 3 and swa.n_averaged == 3
    assert not swa.epoch_end(10, last=True) and swa.n_averaged == 3  # averages as before when it has some
    short = SWACollector(model, every_k_epochs=3)
    assert [short.epoch_end(1), short.epoch_end(2, last=True)] == [False, True]  # a short phase still ends averaged
    assert all(v.dtype == torch.float32 for v in swa.average().values())
    assert swa.averaged_model().weight.dtype == torch.bfloat16
    with pytest.raises(RuntimeError, match="no SWA snapshot"):
        SWACollector(model).average()


def test_state_round_trip_continues_identically():
    model = nn.Linear(3, 2)
    a = SWACollector(model, every_k_epochs=1)
    for value in (1.0, 3.0):
        _set_params(model, value)
        a.collect()
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = SWACollector(model, every_k_epochs=5)
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert b.every_k_epochs == 1 and b.n_averaged == 2
    _set_params(model, 8.0)
    a.collect()
    b.collect()
    for k, v in a.average().items():
        assert torch.equal(v, b.average()[k])
        assert torch.allclose(v, torch.full_like(v, 4.0) * (1 if k == "weight" else 2))
    with pytest.raises(ValueError, match="does not match"):
        SWACollector(nn.Linear(3, 3, bias=False)).load_state_dict(a.state_dict())


def test_swa_lr_restarts_at_half_the_rate_every_cycle():
    base = 1e-4  # Henry et al. (2021): 5 cycles of 30 epochs, each from 5e-5 down by a cosine
    assert swa_lr(0.0, base) == pytest.approx(5e-5)
    assert swa_lr(0.1, base) == pytest.approx(2.5e-5)  # half-way through the first cycle
    assert swa_lr(0.2 - 1e-9, base) == pytest.approx(0.0, abs=1e-12)
    for cycle in range(5):
        assert swa_lr(cycle / 5, base) == pytest.approx(5e-5)
    assert swa_lr(1.0, base) == 0.0
    assert swa_lr(0.5, 1.0, cycles=1, restart_fraction=1.0) == pytest.approx(0.5)


def test_recompute_batch_norm_statistics_by_hand():
    torch.manual_seed(0)
    conv = nn.Conv3d(1, 2, 1)
    model = nn.Sequential(conv, nn.BatchNorm3d(2))
    bn = model[1]
    with torch.no_grad():  # stale statistics, as after averaging weights
        bn.running_mean.fill_(5.0)
        bn.running_var.fill_(7.0)
    batches = [torch.randn(2, 1, 3, 3, 3) * s + s for s in (1.0, 2.0, 3.0)]
    model.eval()
    recompute_norm_statistics(model, batches)
    assert not model.training and bn.momentum == 0.1  # mode and momentum restored
    with torch.no_grad():
        feats = [conv(x) for x in batches]
    # cumulative average over batches of the per-batch mean and unbiased variance (as torch's update_bn)
    mean = torch.stack([f.mean(dim=(0, 2, 3, 4)) for f in feats]).mean(0)
    var = torch.stack([f.transpose(0, 1).reshape(2, -1).var(dim=1, unbiased=True) for f in feats]).mean(0)
    assert torch.allclose(bn.running_mean, mean, atol=1e-5)
    assert torch.allclose(bn.running_var, var, atol=1e-4)
    assert not torch.allclose(bn.running_mean, torch.full_like(mean, 5.0))


def test_recompute_matches_torch_update_bn_on_a_unet():
    torch.manual_seed(0)
    net = build_network("cicek3d", 3, 1, 2, base_width=4, depth=3)  # batch norm
    ref = build_network("cicek3d", 3, 1, 2, base_width=4, depth=3)
    ref.load_state_dict(net.state_dict())
    batches = [(torch.randn(1, 1, 8, 8, 8), "label") for _ in range(2)]
    recompute_norm_statistics(net, batches)
    torch.optim.swa_utils.update_bn([b[0] for b in batches], ref)
    pairs = [(a, b) for a, b in zip(net.modules(), ref.modules()) if isinstance(a, nn.BatchNorm3d)]
    assert len(pairs) == 10
    for a, b in pairs:
        assert torch.allclose(a.running_mean, b.running_mean, atol=1e-6)
        assert torch.allclose(a.running_var, b.running_var, atol=1e-6)
        assert a.num_batches_tracked == b.num_batches_tracked == 2


def test_recompute_keeps_the_statistics_of_frozen_stages():
    torch.manual_seed(0)
    net = build_network("cicek3d", 3, 1, 2, base_width=4, depth=3)
    freeze_encoder(net, 1)  # stage 0 norms stay in eval mode: their statistics are still valid
    frozen = [m for m in net.encoder_stages[0].modules() if isinstance(m, nn.BatchNorm3d)]
    free = [m for m in net.modules() if isinstance(m, nn.BatchNorm3d) and m not in frozen]
    with torch.no_grad():
        for m in frozen + free:
            m.running_mean.fill_(0.25)
    recompute_norm_statistics(net, [torch.randn(1, 1, 8, 8, 8)])
    assert all(torch.equal(m.running_mean, torch.full_like(m.running_mean, 0.25)) for m in frozen)
    assert not any(torch.equal(m.running_mean, torch.full_like(m.running_mean, 0.25)) for m in free)


def test_instance_norm_needs_no_recomputation():
    net = build_network("unet", 3, 1, 2, base_width=4, depth=3)  # instance norm, no running statistics
    before = {k: v.clone() for k, v in net.state_dict().items()}

    def never():
        raise AssertionError("no forward pass is needed")
        yield

    assert recompute_norm_statistics(net, never()) is net
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
