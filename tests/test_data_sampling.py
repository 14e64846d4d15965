"""Tests for voxseg.data.sampling: exact patch shapes, foreground oversampling, flips, padding."""
from __future__ import annotations

import numpy as np
import pytest

from voxseg.data.sampling import PatchSampler, pad_to_multiple, random_flip


def _case(shape=(20, 24, 28), fg_box=(slice(2, 4), slice(20, 23), slice(3, 5)), value=2):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2,) + shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[fg_box] = value
    return image, label


@pytest.mark.parametrize(
    "shape,patch",
    [((20, 24, 28), (8, 8, 8)), ((5, 6, 7), (8, 16, 4)), ((3, 4, 5), (8, 8, 8)), ((20, 24, 28), (1, 16, 16)),
     ((20, 24, 28), (16, 16))],
)
def test_patch_shape_is_exact_even_for_small_volumes(shape, patch):
    image, label = _case(shape, fg_box=(slice(0, 1),) * 3)
    sampler = PatchSampler(image, label, patch, rng=np.random.default_rng(1))
    want = tuple(patch) if len(patch) == 3 else (1,) + tuple(patch)
    for force in (False, True):
        for _ in range(10):
            img, lbl = sampler.sample(force)
            assert img.shape == (2,) + want and lbl.shape == want
            assert img.dtype == np.float32 and lbl.dtype == np.uint8


def test_small_volume_is_zero_padded_and_fully_contained():
    image = np.ones((1, 2, 3, 4), np.float32)
    label = np.ones((2, 3, 4), np.uint8)
    sampler = PatchSampler(image, label, (4, 5, 6), rng=np.random.default_rng(0))
    img, lbl = sampler.sample()
    assert img.sum() == 24 and lbl.sum() == 24  # every voxel of the volume is in the patch, rest is 0


def test_foreground_patches_contain_foreground_of_each_class():
    image, label = _case()
    label[15:17, 2:4, 20:22] = 1  # a second, far-away class
    sampler = PatchSampler(image, label, (6, 6, 6), rng=np.random.default_rng(2))
    assert sampler.classes == [1, 2]
    seen = set()
    for _ in range(60):
        _, lbl = sampler.sample(force_foreground=True)
        present = set(np.unique(lbl).tolist()) - {0}
        assert present
        seen |= present
    assert seen == {1, 2}


def test_foreground_voxel_is_always_inside_patch_near_edges():
    # Single voxel at each corner: clamping the start must never push it out of the patch.
    for corner in [(0, 0, 0), (19, 23, 27), (0, 23, 0)]:
        image, label = _case(fg_box=tuple(slice(c, c + 1) for c in corner))
        sampler = PatchSampler(image, label, (7, 8, 9), rng=np.random.default_rng(3))
        for _ in range(20):
            assert sampler.sample(True)[1].sum() == 2


def test_overhang_lets_patches_reach_beyond_the_volume_by_the_set_fraction():
    image, label = _case(shape=(20, 24, 28))
    patch = (8, 8, 8)
    inside = PatchSampler(image, label, patch, rng=np.random.default_rng(0))
    wide = PatchSampler(image, label, patch, rng=np.random.default_rng(0), overhang=0.5)
    starts_in = np.array([inside.sample_start() for _ in range(400)])
    starts_wide = np.array([wide.sample_start() for _ in range(400)])
    hi = np.array(label.shape) - 8
    assert starts_in.min() >= 0 and (starts_in <= hi).all()
    # Half a patch (4 voxels) beyond each side, and those positions are actually drawn.
    assert starts_wide.min() == -4 and (starts_wide.max(axis=0) == hi + 4).all()
    # The part beyond the volume is zero in image and label.
    edge = [(img, lbl) for img, lbl in (wide.sample() for _ in range(200)) if (img[0, 0] == 0).all()]
    assert edge and all((lbl[0] == 0).all() for _, lbl in edge)
    # Foreground-forced patches still contain their voxel.
    for corner in [(0, 0, 0), (19, 23, 27)]:
        image_c, label_c = _case(fg_box=tuple(slice(c, c + 1) for c in corner))
        sampler = PatchSampler(image_c, label_c, (7, 8, 9), rng=np.random.default_rng(3), overhang=0.5)
        assert all(sampler.sample(True)[1].sum() == 2 for _ in range(20))
    with pytest.raises(ValueError, match="overhang"):
        PatchSampler(image, label, patch, rng=np.random.default_rng(0), overhang=0.6)


def test_batch_foreground_fraction():
    image, label = _case()
    sampler = PatchSampler(image, label, (4, 4, 4), foreground_fraction=1 / 3, rng=np.random.default_rng(4))
    assert [sampler.n_foreground(b) for b in (1, 2, 3, 6, 7)] == [1, 1, 1, 2, 2]
    imgs, lbls = sampler.sample_batch(6)
    assert imgs.shape == (6, 2, 4, 4, 4) and lbls.shape == (6, 4, 4, 4)
    assert all(lbls[i].any() for i in range(2))
    # The foreground is tiny, so random patches rarely hit it: oversampling is what finds it.
    none = PatchSampler(image, label, (4, 4, 4), foreground_fraction=0.0, rng=np.random.default_rng(4))
    assert none.n_foreground(6) == 0
    empty = PatchSampler(image, np.zeros_like(label), (4, 4, 4), rng=np.random.default_rng(4))
    assert empty.n_foreground(6) == 0 and not empty.classes
    assert empty.sample_batch(3)[1].sum() == 0  # forced foreground falls back to random patches


def test_sampling_is_deterministic_for_a_seed_and_caps_coordinates():
    image, label = _case(fg_box=(slice(0, 20), slice(0, 24), slice(0, 14)))
    a = PatchSampler(image, label, (5, 5, 5), rng=np.random.default_rng(7), max_voxels_per_class=100)
    b = PatchSampler(image, label, (5, 5, 5), rng=np.random.default_rng(7), max_voxels_per_class=100)
    assert len(a.foreground_coords[2]) == 100
    for x, y in zip(a.sample_batch(4), b.sample_batch(4)):
        np.testing.assert_array_equal(x, y)


def test_sampler_requires_rng_and_matching_shapes():
    image, label = _case()
    with pytest.raises(ValueError):
        PatchSampler(image, label, (4, 4, 4))
    with pytest.raises(ValueError):
        PatchSampler(image, label[:-1], (4, 4, 4), rng=np.random.default_rng(0))


def test_random_flip_is_an_involution_and_consistent():
    rng_img = np.random.default_rng(0)
    image = rng_img.normal(size=(2, 3, 4, 5)).astype(np.float32)
    label = rng_img.integers(0, 3, size=(3, 4, 5)).astype(np.uint8)
    for seed in range(8):
        fi, fl = random_flip(image, label, np.random.default_rng(seed))
        assert fi.flags.c_contiguous and fl.flags.c_contiguous
        # Same flips in image and label: compare through the label-aligned channel-0 sign of a marker.
        marker = image[0] + 100 * label
        np.testing.assert_array_equal(fi[0] + 100 * fl, random_flip(marker[None], None, np.random.default_rng(seed))[0][0])
        bi, bl = random_flip(fi, fl, np.random.default_rng(seed))
        np.testing.assert_array_equal(bi, image)
        np.testing.assert_array_equal(bl, label)
    always, _ = random_flip(image, None, np.random.default_rng(0), axes=(2,), p=1.0)
    np.testing.assert_array_equal(always, image[..., ::-1])


def test_pad_to_multiple_and_undo():
    a = np.arange(2 * 5 * 6 * 7, dtype=np.float32).reshape(2, 5, 6, 7)
    padded, sl = pad_to_multiple(a, 4)
    assert padded.shape == (2, 8, 8, 8)
    np.testing.assert_array_equal(padded[sl], a)
    assert sl[1] == slice(1, 6)  # 3 voxels of padding: 1 before, 2 after
    padded, sl = pad_to_multiple(a[0, 0], (4, 8), spatial_dims=2)
    assert padded.shape == (8, 8)
    np.testing.assert_array_equal(padded[sl], a[0, 0])
    same, sl = pad_to_multiple(a, 1)
    np.testing.assert_array_equal(same[sl], a)
