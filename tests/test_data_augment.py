"""Tests for voxseg.data.augment: the base contract of every transform, the combined spatial resampling,
determinism and the config round trip. Tiny volumes, answers checked against numpy."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from voxseg.data.augment import (TRANSFORMS, AugmentConfig, Augmenter, ChannelDrop, Elastic, Flip, Gamma,
                                 IntensityScale, IntensityShift, Rot90, Rotation, Scaling, SpatialTransform,
                                 build_augmentation)
from voxseg.data.augment.resample import linear_image, nearest_label, sampling_coordinates
from voxseg.data.augment.spatial import plane_rotation

LABELS = {0, 1, 2}


def _sample(spatial=(8, 10, 12), channels=2, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(channels,) + spatial).astype(np.float32)
    label = np.zeros(spatial, np.uint8)
    inner = tuple(slice(n // 4, n - n // 4) for n in spatial)
    label[inner] = 1
    label[tuple(slice(1, 3 + i) for i in range(len(spatial)))] = 2  # off-centre: no symmetry hides a move
    image[0] += 3 * label  # structure, so blur / sharpen / gamma have something to act on
    return image, label


# Parameters that make each transform's effect certain (p = 1, ranges away from identity).
STRONG = {
    "flip": {"p": 1.0},
    "rot90": {"p": 1.0},
    "rotation": {"p": 1.0, "angle": (20.0, 25.0)},
    "scaling": {"p": 1.0, "factor": (1.3, 1.4)},
    "elastic": {"p": 1.0, "magnitude": (2.0, 2.0), "spacing": 4.0},
    "noise": {"p": 1.0, "std": (0.1, 0.1)},
    "blur": {"p": 1.0},
    "intensity_scale": {"p": 1.0, "factor": (1.05, 1.1)},
    "intensity_shift": {"p": 1.0, "offset": (0.05, 0.1)},
    "low_resolution": {"p": 1.0, "zoom": (0.5, 0.5)},
    "gamma": {"p": 1.0, "gamma": (1.4, 1.5)},
    "sharpen": {"p": 1.0},
    "bias_field": {"p": 1.0, "coefficient": (0.5, 0.5)},
    "channel_drop": {"p": 1.0},
}


def test_every_registered_transform_is_in_the_config_and_the_table():
    assert set(TRANSFORMS) == set(STRONG)
    assert {t.name for t in AugmentConfig().transforms()} == set(TRANSFORMS)


@pytest.mark.parametrize("spatial", [(8, 10, 12), (10, 12)], ids=["3d", "2d"])
@pytest.mark.parametrize("name", sorted(STRONG))
def test_p1_changes_what_it_should_and_p0_is_identity(name, spatial):
    image, label = _sample(spatial)
    before = image.copy(), label.copy()
    t = TRANSFORMS[name](**STRONG[name])
    out, lbl = t(image, label, np.random.default_rng(3))
    np.testing.assert_array_equal(image, before[0])  # inputs untouched
    np.testing.assert_array_equal(label, before[1])
    assert out.shape == image.shape and out.dtype == np.float32 and lbl.shape == label.shape
    assert lbl.dtype == label.dtype and set(np.unique(lbl).tolist()) <= LABELS
    assert not np.array_equal(out, image)
    if isinstance(t, SpatialTransform):
        assert not np.array_equal(lbl, label)
    else:
        np.testing.assert_array_equal(lbl, label)  # intensity never moves labels
    off = dataclasses.replace(t, p=0.0)
    same, same_lbl = off(image, label, np.random.default_rng(3))
    np.testing.assert_array_equal(same, image)
    np.testing.assert_array_equal(same_lbl, label)


def test_intensity_transforms_do_exactly_their_arithmetic():
    image, label = _sample()
    rng = np.random.default_rng(0)
    scaled, _ = IntensityScale(p=1.0)(image, label, rng)
    ratio = scaled / np.where(image == 0, 1, image)
    for c in range(2):
        assert 0.9 <= ratio[c].mean() <= 1.1 and np.ptp(ratio[c][image[c] != 0]) < 1e-4
    shifted, _ = IntensityShift(p=1.0)(image, label, rng)
    for c in range(2):
        d = shifted[c] - image[c]
        assert -0.1 <= d.mean() <= 0.1 and np.ptp(d) < 1e-5
    dropped, _ = ChannelDrop(p=1.0)(image, label, rng)
    assert sum(int(not dropped[c].any()) for c in range(2)) == 1
    g, _ = Gamma(p=1.0, gamma=(1.5, 1.5))(image, label, rng)
    np.testing.assert_allclose(g.mean(axis=(1, 2, 3)), image.mean(axis=(1, 2, 3)), atol=1e-4)  # retain_stats
    np.testing.assert_allclose(g.std(axis=(1, 2, 3)), image.std(axis=(1, 2, 3)), rtol=1e-4)


def test_flip_is_an_involution_and_matches_numpy():
    image, label = _sample()
    f = Flip(p=1.0)
    a, b = f(image, label, np.random.default_rng(0))
    np.testing.assert_array_equal(a, image[:, ::-1, ::-1, ::-1])
    np.testing.assert_array_equal(b, label[::-1, ::-1, ::-1])
    for seed in range(5):
        g = Flip(p=0.5)
        a, b = g(image, label, np.random.default_rng(seed))
        a, b = g(a, b, np.random.default_rng(seed))
        np.testing.assert_array_equal(a, image)
        np.testing.assert_array_equal(b, label)


def test_rot90_matches_numpy_and_four_turns_are_identity():
    image, label = _sample((6, 8, 8))
    for seed in range(6):
        r = Rot90(p=1.0)
        a, b = r(image, label, np.random.default_rng(seed))
        ks = [k for k in (1, 2, 3) if np.array_equal(a, np.rot90(image, k, axes=(2, 3)))]
        assert len(ks) == 1 and np.array_equal(b, np.rot90(label, ks[0], axes=(1, 2)))
        x, y = image, label
        for _ in range(4):
            x, y = r(x, y, np.random.default_rng(seed))
        np.testing.assert_array_equal(x, image)
        np.testing.assert_array_equal(y, label)


def test_combined_identity_reproduces_the_input_exactly():
    image, label = _sample()
    aug = Augmenter([Flip(p=0.0), Rotation(p=1.0, angle=(0.0, 0.0)), Scaling(p=1.0, factor=(1.0, 1.0))])
    a, b = aug(image, label, np.random.default_rng(0))
    np.testing.assert_array_equal(a, image)
    np.testing.assert_array_equal(b, label)
    # Interpolation path with identity coordinates (both backends), e.g. a zero elastic field.
    coords = sampling_coordinates([(n - 1) / 2 for n in label.shape], label.shape, np.eye(3), None)
    for backend in ("torch", "scipy"):
        np.testing.assert_allclose(linear_image(image, coords, backend), image, atol=1e-5)
    np.testing.assert_array_equal(nearest_label(label, coords), label)
    for backend in ("torch", "scipy"):
        a, b = Augmenter([Elastic(p=1.0, magnitude=(0.0, 0.0))], backend)(image, label, np.random.default_rng(0))
        np.testing.assert_allclose(a, image, atol=1e-5)
        np.testing.assert_array_equal(b, label)


@pytest.mark.parametrize("backend", ["torch", "scipy"])
def test_rotation_by_90_degrees_matches_np_rot90(backend):
    image, label = _sample((6, 8, 8))
    aug = Augmenter([Rotation(p=1.0, angle=(90.0, 90.0), axes=(0,))], backend)  # about Z: the (Y, X) plane
    a, b = aug(image, label, np.random.default_rng(0))
    np.testing.assert_array_equal(a, np.rot90(image, 1, axes=(2, 3)))
    np.testing.assert_array_equal(b, np.rot90(label, 1, axes=(1, 2)))
    # Same rotation through the interpolating path.
    centre = [(n - 1) / 2 for n in label.shape]
    coords = sampling_coordinates(centre, label.shape, plane_rotation(3, 1, 2, np.pi / 2), None)
    np.testing.assert_allclose(linear_image(image, coords, backend), np.rot90(image, 1, axes=(2, 3)), atol=1e-5)
    np.testing.assert_array_equal(nearest_label(label, coords), np.rot90(label, 1, axes=(1, 2)))


def test_extract_from_volume_equals_a_plain_crop_without_transforms():
    image, label = _sample((12, 14, 16))
    a, b = Augmenter([]).extract(image, label, centre=(4.5, 5.5, 3.5), patch_size=(6, 6, 6),
                                 rng=np.random.default_rng(0))
    np.testing.assert_array_equal(a, image[:, 2:8, 3:9, 1:7])
    np.testing.assert_array_equal(b, label[2:8, 3:9, 1:7])
    a, b = Augmenter([Flip(p=1.0)]).extract(image, label, centre=(4.5, 5.5, 3.5), patch_size=(6, 6, 6),
                                            rng=np.random.default_rng(0))
    np.testing.assert_array_equal(a, image[:, 2:8, 3:9, 1:7][:, ::-1, ::-1, ::-1])
    np.testing.assert_array_equal(b, label[2:8, 3:9, 1:7][::-1, ::-1, ::-1])
    a, b = Augmenter([]).extract(image, label, centre=(0.5, 0.5, 0.5), patch_size=(4, 4, 4),
                                 rng=np.random.default_rng(0))
    assert a[:, 0].sum() == 0 and b[0].sum() == 0  # beyond the volume is zero
    np.testing.assert_array_equal(a[:, 1:, 1:, 1:], image[:, :3, :3, :3])


def test_default_pipeline_is_deterministic_for_a_seed():
    image, label = _sample()
    aug = build_augmentation(AugmentConfig().replace(sharpen=0.5, bias_field=0.5, channel_drop=0.5))
    outs = [aug(image, label, np.random.default_rng(s)) for s in (1, 1, 2)]
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    assert not np.array_equal(outs[0][0], outs[2][0])


@pytest.mark.parametrize("backend", ["torch", "scipy"])
def test_label_and_image_stay_aligned_after_spatial_augmentation(backend):
    spatial = (16, 16, 16)
    label = np.zeros(spatial, np.uint8)
    label[5:11, 4:12, 6:10] = 1
    image = label[None].astype(np.float32)  # an image cube that coincides with the label cube
    cfg = AugmentConfig(rotation=Rotation(p=1.0), scaling=Scaling(p=1.0, factor=(0.9, 1.1)),
                        elastic=Elastic(p=1.0, magnitude=(1.0, 1.0), spacing=6.0), backend=backend)
    aug = build_augmentation(cfg.replace(noise=0, blur=0, intensity_scale=0, intensity_shift=0,
                                         low_resolution=0, gamma=0))
    for seed in range(4):
        a, b = aug(image, label, np.random.default_rng(seed))
        fg_img, fg_lbl = a[0] > 0.5, b == 1
        dice = 2 * (fg_img & fg_lbl).sum() / (fg_img.sum() + fg_lbl.sum())
        assert dice > 0.9
        ci = np.argwhere(fg_img).mean(axis=0)
        cl = np.argwhere(fg_lbl).mean(axis=0)
        assert np.abs(ci - cl).max() < 0.5


def test_config_json_round_trip_is_exact():
    cfg = AugmentConfig(rotation=Rotation(p=0.3, angle=(-10.0, 15.0), axes=(0,)), backend="scipy").replace(sharpen=0.1)
    text = json.dumps(cfg.to_dict())
    back = AugmentConfig.from_dict(json.loads(text))
    assert back == cfg and json.dumps(back.to_dict()) == text
    assert back.rotation.angle == (-10.0, 15.0) and back.sharpen.p == 0.1
    assert AugmentConfig.from_dict({}) == AugmentConfig()
    with pytest.raises(ValueError):
        AugmentConfig.from_dict({"mixup": {"p": 1}})
    with pytest.raises(ValueError):
        AugmentConfig.from_dict({"flip": {"q": 1}})
    with pytest.raises(ValueError):
        Flip(p=1.5)
    assert [t.name for t in build_augmentation(AugmentConfig()).transforms] == [
        t.name for t in AugmentConfig().transforms() if t.p > 0]
