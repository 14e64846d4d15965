"""Test-time augmentation: exact inverses, equivariant predictors unchanged, non-cubic windows, uncertainty."""
import numpy as np
import pytest
import torch

from voxseg.infer import sliding_window_predict
from voxseg.infer.tta import TTAVariant, tta_predict, tta_variants
from voxseg.infer.uncertainty import PredictionAccumulator, mutual_information, predictive_entropy

RNG = np.random.default_rng(0)


def _key(a):
    return a.shape, np.ascontiguousarray(a).tobytes()


@pytest.mark.parametrize("dims", [2, 3])
def test_every_variant_is_exactly_inverted_and_all_are_distinct(dims):
    image = RNG.normal(size=(2, 3, 4, 5)).astype(np.float32)  # non-cubic: Y != X
    variants = tta_variants("all", dims)
    assert len(variants) == (16 if dims == 3 else 8)
    assert variants[0] == TTAVariant()
    for v in variants:
        np.testing.assert_array_equal(v.invert(v.apply(image)), image)
        assert v.apply(image).shape[2:] == ((5, 4) if v.swaps_yx else (4, 5))
    assert len({_key(v.apply(image)) for v in variants}) == len(variants)  # 16 distinct transforms
    if dims == 2:
        assert all(0 not in v.flips for v in variants)


def test_variant_selection_by_name_and_count():
    assert len(tta_variants("none")) == 1
    assert len(tta_variants("flips")) == 8 and not any(v.rot90 for v in tta_variants("flips"))
    assert tta_variants(3) == tta_variants("all")[:3] == tta_variants("3")
    # 180 and 270 degree turns are in "all" as flip combinations: flip Y+X == rot180.
    x = RNG.normal(size=(1, 2, 3, 3))
    np.testing.assert_array_equal(TTAVariant((1, 2)).apply(x), np.rot90(x, 2, axes=(2, 3)))
    for bad in ("some", 0, 17):
        with pytest.raises(ValueError):
            tta_variants(bad)


def _pointwise(weight):
    """A 1x1x1 'network' + softmax: equivariant to every flip and rotation."""
    def predict(image):
        logits = np.einsum("kc,c...->k...", weight, image)
        e = np.exp(logits - logits.max(0))
        return (e / e.sum(0)).astype(np.float32)
    return predict


def test_equivariant_predictor_gives_identical_results_with_and_without_tta():
    image = RNG.normal(size=(3, 6, 7, 9)).astype(np.float32)
    fn = _pointwise(RNG.normal(size=(4, 3)))
    plain = fn(image)
    for name in ("flips", "all", 5):
        np.testing.assert_allclose(tta_predict(image, fn, tta_variants(name)), plain, atol=1e-6)


def test_non_cubic_window_is_transposed_for_quarter_turns():
    conv = torch.nn.Conv3d(2, 3, 1)
    image = RNG.normal(size=(2, 10, 20, 28)).astype(np.float32)
    patch, seen = (8, 12, 16), set()

    def network(batch):
        seen.add(tuple(batch.shape[2:]))
        return conv(batch)

    def window(p):
        return lambda img: sliding_window_predict(img, network, p, 3, overlap=0.5)

    plain = window(patch)(image)
    seen.clear()
    out = tta_predict(image, window(patch), tta_variants("all"), transposed_fn=window((8, 16, 12)))
    assert seen == {(8, 12, 16), (8, 16, 12)}
    np.testing.assert_allclose(out, plain, atol=1e-5)


def test_tiny_unet_with_tta_and_non_cubic_patch():
    from voxseg.nets import build_network

    net = build_network("unet", 3, 2, 3, base_width=4, depth=3).eval()
    image = RNG.normal(size=(2, 9, 14, 20)).astype(np.float32)

    def window(p):
        return lambda img: sliding_window_predict(img, net, p, 3, overlap=0.25)

    out = tta_predict(image, window((8, 8, 16)), tta_variants("all"), transposed_fn=window((8, 16, 8)))
    assert out.shape == (3, 9, 14, 20) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-5)


def test_uncertainty_is_zero_where_members_agree():
    agree = np.array([[0.7, 0.2], [0.3, 0.8]], np.float32)[:, :, None, None]  # (K=2, 2 voxels, 1, 1)
    members = np.stack([agree, agree, agree])
    np.testing.assert_array_equal(mutual_information(members), 0.0)
    differ = members.copy()
    differ[1, :, 1] = np.array([0.9, 0.1])[:, None, None]  # member 1 flips its vote at voxel 1
    mi = mutual_information(differ)
    assert mi[0, 0, 0] == 0.0 and mi[1, 0, 0] > 0.01  # voxel 0 agrees, voxel 1 does not
    # Entropy by hand: p = (0.5, 0.5) -> ln 2; one sigmoid region at 0.5 -> ln 2.
    half = np.full((2, 1, 1, 1), 0.5, np.float32)
    np.testing.assert_allclose(predictive_entropy(half), np.log(2), rtol=1e-6)
    np.testing.assert_allclose(predictive_entropy(half[:1], "sigmoid"), np.log(2), rtol=1e-6)


def test_accumulator_keeps_a_running_mean():
    acc = PredictionAccumulator("sigmoid", track_uncertainty=True)
    a, b = np.zeros((3, 2, 2, 2), np.float32), np.ones((3, 2, 2, 2), np.float32)
    acc.add(a)
    acc.add(b)
    np.testing.assert_array_equal(acc.mean(), 0.5)
    np.testing.assert_allclose(acc.uncertainty(), np.log(2), rtol=1e-5)  # total disagreement, certain members
