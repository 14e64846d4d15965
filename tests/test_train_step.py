"""One optimisation step (voxseg.train.step): a plain step is SGD's, the non-finite policy skips and counts bad
steps and ends a diverging run, clipping bounds the gradient norm."""
import copy
import math

import pytest
import torch
from torch import nn

from voxseg.train.step import TrainingDiverged, TrainStep


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 3, 1))


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 2, 4, 5, 6, generator=g), torch.randint(0, 3, (2, 1, 4, 5, 6), generator=g)


def _ce(out, y):
    return nn.functional.cross_entropy(out, y[:, 0])


def _step(net, loss_fn=_ce, **kw):
    return TrainStep(net, torch.optim.SGD(net.parameters(), lr=0.1), loss_fn, **kw)


def _weights(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def _unchanged(net, before):
    return all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def _nan_on(calls_to_spoil):
    """A loss that is NaN on the given (1-based) calls."""
    calls = []

    def loss(out, y):
        calls.append(1)
        value = _ce(out, y)
        return value * float("nan") if len(calls) in calls_to_spoil else value
    return loss


def test_a_finite_step_is_exactly_the_optimisers_step_at_the_given_rate():
    net, x, y = _net(), *_batch()
    reference = copy.deepcopy(net)
    step = _step(net)
    value = step(x, y, lr=0.05)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.05)
    loss = _ce(reference(x).float(), y)
    loss.backward()
    optimizer.step()
    assert value == float(loss.detach())
    assert all(g["lr"] == 0.05 for g in step.optimizer.param_groups)
    for key, v in reference.state_dict().items():
        assert torch.equal(net.state_dict()[key], v), key
    assert step.skipped == 0 and step.not_finite_in_a_row == 0


def test_a_nan_loss_is_skipped_and_counted_and_leaves_the_weights_unchanged():
    net, x, y = _net(), *_batch()
    step = _step(net, _nan_on({2}))
    step(x, y, lr=0.1)
    before = _weights(net)
    value = step(x, y, lr=0.1)
    assert math.isnan(value)
    assert _unchanged(net, before)
    assert step.skipped == 1 and step.not_finite_in_a_row == 1
    step(x, y, lr=0.1)  # the next finite loss resets the run of bad ones and updates again
    assert step.not_finite_in_a_row == 0 and step.skipped == 1 and not _unchanged(net, before)


def test_finite_loss_with_non_finite_gradients_is_skipped_too():
    net, x, y = _net(), *_batch()

    def loss(out, y):  # value 0, gradient 0 * 1/sqrt(0) = NaN
        return torch.sqrt(out.sum() * 0.0)
    step = _step(net, loss)
    before = _weights(net)
    assert step(x, y, lr=0.1) == 0.0
    assert _unchanged(net, before) and step.skipped == 1 and step.not_finite_in_a_row == 0


def test_n_non_finite_losses_in_a_row_end_the_run():
    net, x, y = _net(), *_batch()
    step = _step(net, _nan_on({1, 2, 4, 5, 6}), diverged_after=3)
    before = _weights(net)
    step(x, y, lr=0.1)
    step(x, y, lr=0.1)
    assert _unchanged(net, before)
    step(x, y, lr=0.1)  # finite: the count starts again
    after_good = _weights(net)
    step(x, y, lr=0.1)
    step(x, y, lr=0.1)
    with pytest.raises(TrainingDiverged) as err:
        step(x, y, lr=0.1)
    assert err.value.in_a_row == 3 and _unchanged(net, after_good)


@pytest.mark.parametrize("clip", [0.5, None])
def test_clipping_bounds_the_gradient_norm(clip):
    net, x, y = _net(), *_batch()
    step = _step(net, lambda out, y: 1000.0 * _ce(out, y), grad_clip=clip)
    step(x, y, lr=0.0)
    norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in net.parameters()])))
    if clip is None:
        assert norm > 10.0  # the loss is large: without clipping the gradient is too
    else:
        assert norm == pytest.approx(clip, rel=1e-4)


def test_deep_supervision_weights_the_outputs_finest_first():
    from voxseg.losses import DeepSupervisionLoss

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv3d(2, 3, 1)

        def forward(self, x):
            out = self.a(x)
            return [out, nn.functional.avg_pool3d(out, 2)]

    torch.manual_seed(0)
    net, (x, y) = Two(), _batch()
    x, y = x[..., :4, :4, :4], y[..., :4, :4, :4]
    expected = float(DeepSupervisionLoss(_ce, 2)(list(net(x)), y).detach())
    assert _step(net, deep_supervision=True)(x, y, lr=0.0) == pytest.approx(expected)
