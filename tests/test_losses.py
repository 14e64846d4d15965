"""Losses: hand-computed values on 2x2 images, MONAI oracles, conventions, deep supervision, dtypes."""
from __future__ import annotations

import math

import pytest
import torch

from voxseg.losses import (
    LOSSES,
    CompoundLoss,
    CrossEntropyLoss,
    DeepSupervisionLoss,
    FocalLoss,
    FocalTverskyLoss,
    GeneralizedDiceLoss,
    SoftDiceLoss,
    TverskyLoss,
    build_loss,
    deep_supervision_weights,
    downsample_target,
    loss_table,
    parse_loss_args,
)

# One 2x2 image (shape (1, 1, 2, 2)): probabilities P against target G, read row by row.
P = [0.8, 0.6, 0.2, 0.4]
G = [1.0, 1.0, 0.0, 0.0]
# Soft counts: TP = 0.8 + 0.6 = 1.4; FP = 0.2 + 0.4 = 0.6; FN = 0.2 + 0.4 = 0.6; sum P = 2.0; sum G = 2.


def _sigmoid_case(p=P, g=G):
    """Logits whose sigmoid is ``p``, and the 0/1 target ``g``, both (1, 1, 2, 2)."""
    probs = torch.tensor(p, dtype=torch.float64).view(1, 1, 2, 2)
    return torch.logit(probs).float(), torch.tensor(g).view(1, 1, 2, 2)


def _softmax_case(p=P, g=G):
    """Two-class logits (background 0, foreground logit(p)) whose softmax foreground is ``p``;
    class-index target (1, 1, 2, 2)."""
    fg, t = _sigmoid_case(p, g)
    return torch.cat([torch.zeros_like(fg), fg], 1), t.long()


HAND_CASES = [
    # (id, loss, mode, expected, how)
    ("dice_sigmoid", SoftDiceLoss("sigmoid", smooth=0), "sigmoid", 0.3, "1 - 2*1.4/(2+2)"),
    ("dice_softmax_fg", SoftDiceLoss("softmax", smooth=0), "softmax", 0.3, "fg channel only, same as sigmoid"),
    # background channel: p_bg = [.2,.4,.8,.6], g_bg = [0,0,1,1]: also 1 - 2*1.4/4 = 0.3, mean stays 0.3
    ("dice_softmax_bg", SoftDiceLoss("softmax", include_background=True, smooth=0), "softmax", 0.3, "mean(0.3, 0.3)"),
    # squared: sum p^2 = .64+.36+.04+.16 = 1.2, sum g^2 = 2 -> 1 - 2.8/3.2 = 0.125
    ("dice_sq", SoftDiceLoss("sigmoid", smooth=0, squared_denominator=True), "sigmoid", 0.125, "1 - 2.8/3.2"),
    # TI = 1.4 / (1.4 + 0.3*0.6 + 0.7*0.6) = 1.4 / 2.0 = 0.7
    ("tversky", TverskyLoss("sigmoid", alpha=0.3, beta=0.7, smooth=0), "sigmoid", 0.3, "1 - 1.4/2.0"),
    # FTL = (1 - 0.7)^(1/(4/3)) = 0.3^0.75
    ("focal_tversky", FocalTverskyLoss("sigmoid", gamma=4 / 3, smooth=0), "sigmoid", 0.3**0.75, "0.3^0.75"),
    ("focal_tversky_g1", FocalTverskyLoss("sigmoid", gamma=1.0, smooth=0), "sigmoid", 0.3, "gamma=1 is Tversky"),
    # p_t = [.8,.6,.8,.6], -log p_t = [.22314,.51083,.22314,.51083] -> mean 0.366985
    ("bce", CrossEntropyLoss("sigmoid"), "sigmoid", -(math.log(0.8) + math.log(0.6)) / 2, "mean -log p_t"),
    ("ce_softmax", CrossEntropyLoss("softmax"), "softmax", -(math.log(0.8) + math.log(0.6)) / 2, "same p_t"),
    # alpha_t = [.25,.25,.75,.75]; (1-p_t)^2 = [.04,.16,.04,.16]
    # terms .25*.04*.22314 + .25*.16*.51083 + .75*.04*.22314 + .75*.16*.51083 = 0.090658 -> mean 0.0226645
    (
        "focal_sigmoid",
        FocalLoss("sigmoid", gamma=2, alpha=0.25),
        "sigmoid",
        (0.25 + 0.75) * (0.04 * -math.log(0.8) + 0.16 * -math.log(0.6)) / 4,
        "mean -alpha_t (1-p_t)^2 log p_t",
    ),
    # softmax alpha: background (class 0) gets 1-alpha = .75, foreground alpha = .25 -> same numbers
    (
        "focal_softmax",
        FocalLoss("softmax", gamma=2, alpha=0.25),
        "softmax",
        (0.25 + 0.75) * (0.04 * -math.log(0.8) + 0.16 * -math.log(0.6)) / 4,
        "as sigmoid",
    ),
    ("focal_gamma0_is_ce", FocalLoss("sigmoid", gamma=0, alpha=None), "sigmoid", 0.366985, "gamma=0 -> BCE"),
]


@pytest.mark.parametrize("name,loss,mode,expected,how", HAND_CASES, ids=[c[0] for c in HAND_CASES])
def test_hand_computed(name, loss, mode, expected, how):
    logits, target = _sigmoid_case() if mode == "sigmoid" else _softmax_case()
    assert float(loss(logits, target)) == pytest.approx(expected, abs=1e-5), how


def test_generalized_dice_hand_computed():
    # channel A: P, G as above: sum g = 2 -> w = 1/4, TP = 1.4, sum p + sum g = 4
    # channel B: p = .5 everywhere, g = [1,0,0,0]: sum g = 1 -> w = 1, TP = .5, sum p + sum g = 3
    # GDL = 1 - 2 (1/4*1.4 + 1*.5) / (1/4*4 + 1*3) = 1 - 1.7/4 = 0.575 (mean soft Dice would be 0.4833)
    a_logits, a_target = _sigmoid_case()
    b_logits, b_target = _sigmoid_case([0.5] * 4, [1.0, 0.0, 0.0, 0.0])
    logits, target = torch.cat([a_logits, b_logits], 1), torch.cat([a_target, b_target], 1)
    assert float(GeneralizedDiceLoss("sigmoid", smooth=0)(logits, target)) == pytest.approx(0.575, abs=1e-5)
    assert float(SoftDiceLoss("sigmoid", smooth=0)(logits, target)) == pytest.approx(1 - (0.7 + 1 / 3) / 2, abs=1e-5)


def _perfect(mode, shape=(2, 3, 4, 4, 4)):
    gen = torch.Generator().manual_seed(0)
    n, c, *spatial = shape
    if mode == "softmax":
        index = torch.randint(0, c, (n, *spatial), generator=gen)
        onehot = torch.nn.functional.one_hot(index, c).movedim(-1, 1).float()
        return (onehot * 2 - 1) * 30, index.unsqueeze(1)
    target = (torch.rand(shape, generator=gen) > 0.5).float()
    return (target * 2 - 1) * 30, target


@pytest.mark.parametrize("mode", ["softmax", "sigmoid"])
@pytest.mark.parametrize("name", ["dice", "dice_sq", "gdl", "tversky", "focal_tversky", "ce", "focal", "dice+ce"])
def test_perfect_prediction_is_near_zero(name, mode):
    logits, target = _perfect(mode)
    assert abs(float(build_loss(name, mode)(logits, target))) < 1e-3


# ---------------------------------------------------------------------------------------------------------------
# MONAI oracles on random tensors (each test skips by itself when MONAI is absent; the hand-computed tests
# above and below still run)


def _monai_losses():
    return pytest.importorskip("monai.losses")


def _random(mode, shape=(2, 3, 6, 5, 4), seed=1):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=gen) * 2
    n, c, *spatial = shape
    if mode == "softmax":
        return logits, torch.randint(0, c, (n, 1, *spatial), generator=gen)
    return logits, (torch.rand(shape, generator=gen) > 0.6).float()


def _monai_kw(mode):
    return {"softmax": True, "to_onehot_y": True} if mode == "softmax" else {"sigmoid": True}


def _dice_bce(logits, target):
    # MONAI's DiceCELoss uses softmax CE whenever C > 1, even with sigmoid=True: build Dice + BCE from parts
    return _monai_losses().DiceLoss(sigmoid=True)(logits, target) + torch.nn.BCEWithLogitsLoss()(logits, target)


ORACLES = [
    # (id, ours(mode), monai(mode), modes)
    (
        "dice",
        lambda m: SoftDiceLoss(m),
        lambda m: _monai_losses().DiceLoss(include_background=m == "sigmoid", **_monai_kw(m)),
    ),
    (
        "dice_bg",
        lambda m: SoftDiceLoss(m, include_background=True),
        lambda m: _monai_losses().DiceLoss(include_background=True, **_monai_kw(m)),
    ),
    (
        "dice_batch",
        lambda m: SoftDiceLoss(m, batch_dice=True),
        lambda m: _monai_losses().DiceLoss(include_background=m == "sigmoid", batch=True, **_monai_kw(m)),
    ),
    (
        "dice_squared",
        lambda m: SoftDiceLoss(m, squared_denominator=True),
        lambda m: _monai_losses().DiceLoss(include_background=m == "sigmoid", squared_pred=True, **_monai_kw(m)),
    ),
    (
        "gdl",
        lambda m: GeneralizedDiceLoss(m, include_background=True, smooth=1e-9),
        lambda m: _monai_losses().GeneralizedDiceLoss(smooth_nr=1e-9, smooth_dr=1e-9, **_monai_kw(m)),
    ),
    (
        "gdl_batch",
        lambda m: GeneralizedDiceLoss(m, include_background=True, batch_dice=True, smooth=1e-9),
        lambda m: _monai_losses().GeneralizedDiceLoss(batch=True, smooth_nr=1e-9, smooth_dr=1e-9, **_monai_kw(m)),
    ),
    (
        "tversky",
        lambda m: TverskyLoss(m, alpha=0.3, beta=0.7),
        lambda m: _monai_losses().TverskyLoss(include_background=m == "sigmoid", alpha=0.3, beta=0.7, **_monai_kw(m)),
    ),
    (
        "dice+ce",
        lambda m: build_loss("dice+ce", m),
        lambda m: _monai_losses().DiceCELoss(include_background=False, **_monai_kw(m)) if m == "softmax" else _dice_bce,
    ),
]


@pytest.mark.parametrize("mode", ["softmax", "sigmoid"])
@pytest.mark.parametrize("ours,theirs", [o[1:] for o in ORACLES], ids=[o[0] for o in ORACLES])
def test_matches_monai(ours, theirs, mode):
    _monai_losses()
    for spatial in [(6, 5, 4), (7, 9)]:  # 3-D and 2-D
        logits, target = _random(mode, (2, 3, *spatial))
        expected = theirs(mode)(logits, target)
        assert float(ours(mode)(logits, target)) == pytest.approx(float(expected), rel=1e-4, abs=1e-6)


def test_focal_matches_monai():
    monai_losses = _monai_losses()
    logits, target = _random("sigmoid")
    theirs = monai_losses.FocalLoss(gamma=2.0, alpha=0.25, use_softmax=False)(logits, target)
    assert float(FocalLoss("sigmoid", gamma=2, alpha=0.25)(logits, target)) == pytest.approx(float(theirs), rel=1e-4)
    # softmax: MONAI averages over N*C*voxels (one-hot entries); ours is the per-voxel mean, so compare sums
    logits, target = _random("softmax")
    theirs = monai_losses.FocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0, alpha=0.25, reduction="none")(
        logits, target
    ).sum()
    n_voxels = target.numel()
    ours = FocalLoss("softmax", gamma=2, alpha=0.25)(logits, target) * n_voxels
    assert float(ours) == pytest.approx(float(theirs), rel=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Conventions that Archit & Adilina (2022) write the other way round


def test_tversky_alpha_weights_false_positives():
    # Prediction covers all 4 pixels, target only 2: TP = 2, FP = 2, FN = 0 -> TI = 2 / (2 + 2 alpha)
    logits = torch.full((1, 1, 2, 2), 30.0)
    target = torch.tensor(G).view(1, 1, 2, 2)
    only_fp = TverskyLoss("sigmoid", alpha=0.3, beta=0.7, smooth=0)(logits, target)
    assert float(only_fp) == pytest.approx(1 - 1 / 1.3, abs=1e-5)  # 0.2308; the swapped formula gives 0.4118
    # Prediction empty, target 2 pixels: TP = 0 -> loss 1 whatever beta; with one hit and one miss:
    # p = [1, 0, 0, 0] (logits +-30): TP = 1, FP = 0, FN = 1 -> TI = 1 / (1 + beta)
    logits = torch.tensor([30.0, -30.0, -30.0, -30.0]).view(1, 1, 2, 2)
    only_fn = TverskyLoss("sigmoid", alpha=0.3, beta=0.7, smooth=0)(logits, target)
    assert float(only_fn) == pytest.approx(1 - 1 / 1.7, abs=1e-5)
    assert float(only_fn) > float(TverskyLoss("sigmoid", alpha=0.7, beta=0.3, smooth=0)(logits, target))


def test_focal_tversky_exponent_is_one_over_gamma():
    logits, target = _sigmoid_case()  # 1 - TI = 0.3
    for gamma in (1.0, 4 / 3, 2.0, 3.0):
        value = float(FocalTverskyLoss("sigmoid", gamma=gamma, smooth=0)(logits, target))
        assert value == pytest.approx(0.3 ** (1 / gamma), abs=1e-5)
    assert 0.3 ** (1 / 2) > 0.3  # 1/gamma < 1 *raises* a small loss: the focus is on the hard cases
    with pytest.raises(ValueError, match=r"\[1, 3\]"):
        FocalTverskyLoss(gamma=0.5)


def test_focal_tversky_sums_over_classes():
    a_logits, a_target = _sigmoid_case()
    logits, target = torch.cat([a_logits, a_logits], 1), torch.cat([a_target, a_target], 1)
    assert float(FocalTverskyLoss("sigmoid", gamma=1, smooth=0)(logits, target)) == pytest.approx(0.6, abs=1e-5)


def test_focal_is_ce_modulated():
    logits, target = _random("softmax")
    ce = CrossEntropyLoss("softmax")(logits, target)
    assert float(FocalLoss("softmax", gamma=0, alpha=None)(logits, target)) == pytest.approx(float(ce), rel=1e-5)
    assert float(FocalLoss("softmax", gamma=2, alpha=None)(logits, target)) < float(ce)


def test_class_weights():
    logits, target = _random("softmax")
    w = [0.2, 1.0, 3.0]
    expected = torch.nn.functional.cross_entropy(logits, target[:, 0], weight=torch.tensor(w))
    assert float(CrossEntropyLoss("softmax", weight=w)(logits, target)) == pytest.approx(float(expected), rel=1e-5)
    logits, target = _random("sigmoid")
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, target, weight=torch.tensor(w).view(1, 3, 1, 1, 1)
    )
    assert float(CrossEntropyLoss("sigmoid", weight=w)(logits, target)) == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError, match="3 channels"):
        CrossEntropyLoss("softmax", weight=[1, 2])(logits, target.long().argmax(1, keepdim=True))


# ---------------------------------------------------------------------------------------------------------------
# Registry, spec strings, argument routing


def test_registry_and_table():
    for name in ["dice", "dice_sq", "gdl", "ce", "focal", "tversky", "focal_tversky", "dice+ce", "dice+focal",
                 "dice+tversky", "tversky+ce"]:
        assert name in LOSSES and LOSSES[name].reference
        assert name in loss_table()
    assert "Salehi" in LOSSES["tversky"].reference and "Abraham" in LOSSES["focal_tversky"].reference


def test_spec_weights():
    logits, target = _random("softmax")
    dice, ce = SoftDiceLoss("softmax")(logits, target), CrossEntropyLoss("softmax")(logits, target)
    assert float(build_loss("0.5*dice+1*ce")(logits, target)) == pytest.approx(float(0.5 * dice + ce), rel=1e-5)
    assert float(build_loss("dice+ce")(logits, target)) == pytest.approx(float(dice + ce), rel=1e-5)
    assert isinstance(build_loss("tversky"), TverskyLoss)
    assert isinstance(build_loss("2*tversky"), CompoundLoss)
    for bad in ["dice+", "dice+nope", "dice+dice", "0.5**dice"]:
        with pytest.raises(ValueError):
            build_loss(bad)


def test_kwargs_routing():
    loss = build_loss("dice+tversky", "sigmoid", alpha=0.4, beta=0.6, batch_dice=True)
    assert (loss.losses["tversky"].alpha, loss.losses["tversky"].beta) == (0.4, 0.6)
    assert loss.losses["dice"].batch_dice and loss.losses["tversky"].batch_dice
    loss = build_loss("dice+focal", gamma=1.0, alpha=0.5)
    assert (loss.losses["focal"].gamma, loss.losses["focal"].alpha) == (1.0, 0.5)
    assert build_loss("focal_tversky", **parse_loss_args("alpha=0.3,beta=0.7,gamma=1.33")).gamma == 1.33
    with pytest.raises(ValueError, match="means different things"):
        build_loss("focal+tversky", alpha=0.3)
    loss = build_loss("focal+tversky", **{"focal.alpha": 0.25, "tversky.alpha": 0.3})
    assert (loss.losses["focal"].alpha, loss.losses["tversky"].alpha) == (0.25, 0.3)
    with pytest.raises(ValueError, match="takes argument 'bogus'"):
        build_loss("dice+ce", bogus=1)
    with pytest.raises(ValueError, match="not in the loss"):
        build_loss("dice+ce", **{"focal.gamma": 2})


def test_parse_loss_args():
    assert parse_loss_args("alpha=0.3,beta=0.7,gamma=1.33") == {"alpha": 0.3, "beta": 0.7, "gamma": 1.33}
    assert parse_loss_args("") == {} and parse_loss_args(None) == {}
    assert parse_loss_args("weight=[1, 2.5, 3], batch_dice=true, alpha=none") == {
        "weight": [1, 2.5, 3],
        "batch_dice": True,
        "alpha": None,
    }
    assert parse_loss_args("tversky.alpha=0.3") == {"tversky.alpha": 0.3}
    for bad in ["alpha", "=3", "alpha=1,alpha=2"]:
        with pytest.raises(ValueError):
            parse_loss_args(bad)


def test_target_errors():
    logits = torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match=r"valid 0\.\.2"):
        SoftDiceLoss("softmax")(logits, torch.full((1, 1, 4, 4), 3))
    with pytest.raises(ValueError, match="sigmoid"):
        SoftDiceLoss("sigmoid")(logits, torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="mode"):
        SoftDiceLoss("softmaxx")
    with pytest.raises(ValueError, match=">= 2 output channels"):
        SoftDiceLoss("softmax")(torch.randn(1, 1, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.long))


def test_softmax_target_layouts_agree():
    logits, target = _random("softmax")
    loss = build_loss("dice+ce")
    a = loss(logits, target)
    b = loss(logits, target[:, 0])
    onehot = torch.nn.functional.one_hot(target[:, 0], 3).movedim(-1, 1).float()
    c = loss(logits, onehot)
    assert float(a) == pytest.approx(float(b)) and float(a) == pytest.approx(float(c), rel=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Deep supervision


def test_deep_supervision_weights():
    assert deep_supervision_weights(4) == pytest.approx((8 / 14, 4 / 14, 2 / 14, 0.0))
    assert deep_supervision_weights(4, drop_lowest=False) == pytest.approx((8 / 15, 4 / 15, 2 / 15, 1 / 15))
    assert deep_supervision_weights(1) == (1.0,)
    assert deep_supervision_weights(2) == (1.0, 0.0)
    assert sum(deep_supervision_weights(5)) == pytest.approx(1.0)


@pytest.mark.parametrize("mode", ["softmax", "sigmoid"])
def test_deep_supervision_loss(mode):
    base = build_loss("dice+ce", mode)
    logits, target = _random(mode, (2, 3, 8, 8, 8))
    outputs = [logits, torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 2, 2, 2), torch.randn(2, 5, 1, 1, 1)]
    ds = DeepSupervisionLoss(base, 4)  # last output has 5 channels: it would fail if it were evaluated
    expected = sum(
        w * base(o, downsample_target(target, o.shape[2:], mode)) for w, o in zip(ds.weights[:3], outputs[:3])
    )
    assert float(ds(outputs, target)) == pytest.approx(float(expected), rel=1e-6)
    assert float(ds(logits, target)) == pytest.approx(float(base(logits, target)), rel=1e-6)


def test_downsample_target():
    index = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    index[0, 0, 0, 0], index[0, 0, 1, 1] = 2, 1
    small = downsample_target(index, (2, 2), "softmax")
    assert small.dtype == torch.long and small.tolist() == [[[[2, 0], [0, 0]]]]  # nearest: never a new label
    assert downsample_target(index[:, 0], (2, 2), "softmax").shape == (1, 2, 2)
    regions = torch.zeros(1, 2, 4, 4)
    regions[0, 1, 3, 3] = 1
    small = downsample_target(regions, (2, 2), "sigmoid")
    assert small.tolist() == [[[[0, 0], [0, 0]], [[0, 0], [0, 1]]]]  # max pooling keeps the lone voxel


# ---------------------------------------------------------------------------------------------------------------
# Gradients, dtypes, 2-D


@pytest.mark.parametrize("mode", ["softmax", "sigmoid"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradient_flows_2d_and_3d(name, mode):
    for shape in [(2, 3, 5, 6), (2, 3, 4, 5, 6)]:
        logits, target = _random(mode, shape)
        logits.requires_grad_(True)
        value = build_loss(name, mode)(logits, target)
        value.backward()
        assert value.ndim == 0 and torch.isfinite(value)
        assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["softmax", "sigmoid"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_bf16_logits_computed_in_float32(name, mode):
    logits, target = _random(mode)
    low = logits.bfloat16().requires_grad_(True)
    loss = build_loss(name, mode)
    value = loss(low, target)
    assert value.dtype == torch.float32
    assert float(value.detach()) == pytest.approx(float(loss(low.detach().float(), target)), rel=1e-6)
    value.backward()
    assert low.grad.dtype == torch.bfloat16 and torch.isfinite(low.grad.float()).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert loss(low, target).dtype == torch.float32
