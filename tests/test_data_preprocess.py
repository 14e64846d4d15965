"""Tests for voxseg.data.preprocess: hand-computed normalisation, label mapping, crop, resampling, restore."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from voxseg.data.preprocess import (
    LabelMapping,
    PreprocessConfig,
    PreprocessRecord,
    foreground_intensity_statistics,
    nonzero_bbox,
    normalize_image,
    preprocess_case,
    resample_label,
    resample_probabilities,
    restore_to_original,
)


def _sphere(shape, centre, radius_mm, spacing):
    zz, yy, xx = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    c = [ci * s for ci, s in zip(centre, spacing)]
    return ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) < radius_mm**2


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


# --- config -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        PreprocessConfig(),
        PreprocessConfig("percentile", 1.0, 99.0, None, (1.0, 0.5, 0.5), False),
        PreprocessConfig("ct", ct_window=(-100, 240.5), target_spacing=(3, 1, 1)),
        PreprocessConfig("ct", ct_window=(-100, 240.5), ct_mean=60.0, ct_std=40.0),
        PreprocessConfig("none", crop_to_nonzero=False),
    ],
)
def test_config_json_round_trip(config):
    again = PreprocessConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.to_dict() == config.to_dict()


@pytest.mark.parametrize(
    "kwargs",
    [{"normalization": "minmax"}, {"normalization": "ct", "ct_std": 0.0}, {"percentile_low": 60, "percentile_high": 40},
     {"target_spacing": (1.0, 1.0)}, {"target_spacing": (1.0, 0.0, 1.0)}],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        PreprocessConfig(**kwargs)


# --- normalisation (values computed by hand) ----------------------------------------------------------


def test_zscore_uses_nonzero_voxels_and_keeps_background_zero():
    # Nonzero values 1, 2, 3: mean 2, population std sqrt(2/3).
    image = np.zeros((1, 1, 2, 2), np.float32)
    image[0, 0, 0, :] = [1, 2]
    image[0, 0, 1, 0] = 3
    out = normalize_image(image, PreprocessConfig("zscore"))
    s = np.sqrt(2 / 3)
    np.testing.assert_allclose(out[0, 0], [[-1 / s, 0.0], [1 / s, 0.0]], rtol=1e-6)
    assert out[0, 0, 1, 1] == 0.0 and out.dtype == np.float32


def test_zscore_mask_is_shared_across_channels():
    # Channel 1 is zero where channel 0 is not: that voxel is inside the mask for both channels.
    image = np.array([[[[0, 2, 4]]], [[[0, 0, 6]]]], np.float32)  # (2, 1, 1, 3)
    out = normalize_image(image, PreprocessConfig("zscore"))
    np.testing.assert_allclose(out[0, 0, 0], [0, -1, 1], atol=1e-6)  # mean 3, std 1
    np.testing.assert_allclose(out[1, 0, 0], [0, -1, 1], atol=1e-6)  # values 0, 6: mean 3, std 3


def test_percentile_clip_and_minmax():
    # 0..100: 10th and 90th percentiles are 10 and 90.
    image = np.arange(101, dtype=np.float32).reshape(1, 1, 1, 101)
    out = normalize_image(image, PreprocessConfig("percentile", 10, 90))[0, 0, 0]
    assert out[0] == 0.0 and out[10] == 0.0 and out[90] == 1.0 and out[100] == 1.0
    np.testing.assert_allclose(out[50], 0.5, atol=1e-6)


def test_ct_window_then_zscore():
    image = np.array([-1000, 0, 100, 3000], np.float32).reshape(1, 1, 1, 4)
    out = normalize_image(image, PreprocessConfig("ct", ct_window=(0, 100)))[0, 0, 0]
    # clipped to 0, 0, 100, 100: mean 50, std 50
    np.testing.assert_allclose(out, [-1, -1, 1, 1], atol=1e-6)


def test_ct_with_the_training_foreground_statistics_and_without_a_window():
    image = np.array([-1000, 0, 100, 3000], np.float32).reshape(1, 1, 1, 4)
    out = normalize_image(image, PreprocessConfig("ct", ct_window=(0, 100), ct_mean=20.0, ct_std=40.0))[0, 0, 0]
    np.testing.assert_allclose(out, [-0.5, -0.5, 2.0, 2.0], atol=1e-6)  # (clip - 20) / 40, whatever the case holds
    with pytest.raises(ValueError, match="needs ct_window"):
        normalize_image(image, PreprocessConfig("ct"))


def test_foreground_intensity_statistics_pool_the_labelled_voxels():
    rng = np.random.default_rng(1)
    cases = []
    for k in range(3):
        image = rng.normal(40 * k, 10, (2, 6, 7, 8)).astype(np.float32)
        label = (rng.random((6, 7, 8)) > 0.6).astype(np.uint8)
        cases.append((image, label))
    stats = foreground_intensity_statistics(cases)  # fewer voxels than the sample size: every one counts
    pooled = np.concatenate([img[:, lab > 0].ravel() for img, lab in cases]).astype(np.float64)
    assert stats["n"] == pooled.size
    assert stats["mean"] == pytest.approx(pooled.mean()) and stats["std"] == pytest.approx(pooled.std())
    assert [stats["p00_5"], stats["p99_5"]] == pytest.approx(np.percentile(pooled, [0.5, 99.5]))
    sampled = foreground_intensity_statistics(cases, samples_per_case=50, seed=3)
    assert sampled["n"] == 150 and sampled == foreground_intensity_statistics(cases, samples_per_case=50, seed=3)
    with pytest.raises(ValueError, match="no foreground"):
        foreground_intensity_statistics([(cases[0][0], np.zeros((6, 7, 8), np.uint8))])


def test_real_ct_liver_window_lies_in_soft_tissue():
    folder = Path(__file__).resolve().parents[2] / "shared" / "data" / "totalseg"
    if not (folder / "example_ct_sm.nii.gz").exists():
        pytest.skip("../shared/data/totalseg (CT example with a liver mask) is absent")
    from voxseg.io import read_volume

    image, _ = read_volume(folder / "example_ct_sm.nii.gz")
    liver, _ = read_volume(folder / "example_seg_fast_liver.nii.gz", dtype=np.int16)
    stats = foreground_intensity_statistics([(image[None], liver)])
    # Liver parenchyma is ~40-80 HU; the 0.5-99.5% window of the mask stays inside soft tissue, far from air
    # (-1000) and bone (> 400), which is what a window taken over the whole CT would reach.
    assert -200 < stats["p00_5"] < stats["mean"] < stats["p99_5"] < 400
    assert 20 < stats["mean"] < 150
    assert np.percentile(image, 0.5) < -500


def test_constant_and_empty_channels_do_not_divide_by_zero():
    for mode in ("zscore", "percentile"):
        for value in (0.0, 5.0):
            out = normalize_image(np.full((1, 2, 2, 2), value, np.float32), PreprocessConfig(mode))
            assert np.isfinite(out).all() and (out == 0).all()


# --- label mapping ------------------------------------------------------------------------------------


def test_label_mapping_brats_both_directions():
    m = LabelMapping([4, 2, 1, 0, 2])
    assert m.values == [0, 1, 2, 4] and m.num_classes == 4
    label = np.array([[0, 1], [2, 4]], np.int32)
    cons = m.to_consecutive(label)
    assert cons.dtype == np.uint8
    np.testing.assert_array_equal(cons, [[0, 1], [2, 3]])
    back = m.to_original(cons)
    np.testing.assert_array_equal(back, label)
    assert LabelMapping.from_dict(json.loads(json.dumps(m.to_dict()))) == m


def test_label_mapping_errors_list_unknown_values():
    m = LabelMapping([0, 1, 2, 4])
    with pytest.raises(ValueError, match=r"\[3, 7\]"):
        m.to_consecutive(np.array([0, 3, 7, 3]))
    with pytest.raises(ValueError, match=r"\[4\]"):
        m.to_original(np.array([0, 4]))


def test_label_mapping_from_arrays_adds_background_and_accepts_integer_floats():
    m = LabelMapping.from_arrays([np.array([1, 1, 2]), np.array([5.0, 2.0], np.float32)])
    assert m.values == [0, 1, 2, 5]
    assert LabelMapping.from_arrays(np.array([3, 0])).values == [0, 3]
    with pytest.raises(ValueError):
        m.to_consecutive(np.array([1.5]))


# --- crop, record, restore ----------------------------------------------------------------------------


def test_nonzero_bbox_union_over_channels_and_all_zero():
    image = np.zeros((2, 5, 6, 7), np.float32)
    image[0, 1, 2, 3] = 1
    image[1, 3, 4, 5] = -2
    assert nonzero_bbox(image) == [(1, 4), (2, 5), (3, 6)]
    assert nonzero_bbox(np.zeros((1, 3, 4, 5))) == [(0, 3), (0, 4), (0, 5)]


def test_preprocess_crops_and_restore_is_bit_exact_without_resampling():
    rng = np.random.default_rng(0)
    image = np.zeros((2, 10, 12, 14), np.float32)
    image[:, 2:8, 3:10, 1:13] = rng.uniform(1, 5, size=(2, 6, 7, 12))
    label = np.zeros((10, 12, 14), np.uint8)
    label[3:7, 4:9, 2:12] = rng.integers(0, 4, size=(4, 5, 10))
    case = preprocess_case(image, (2.0, 1.0, 1.0), PreprocessConfig(), label)
    rec = case.record
    assert rec.crop_bbox == [(2, 8), (3, 10), (1, 13)]
    assert rec.cropped_shape == rec.resampled_shape == (6, 7, 12) == case.image.shape[1:] == case.label.shape
    assert rec.original_spacing == rec.resampled_spacing == (2.0, 1.0, 1.0)
    assert rec.label_voxels_outside_crop == 0
    restored = restore_to_original(case.label, rec, is_label=True)
    assert restored.dtype == label.dtype
    np.testing.assert_array_equal(restored, label)
    assert PreprocessRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec


def test_label_outside_crop_is_counted():
    image = np.zeros((1, 4, 4, 4), np.float32)
    image[0, 1:3, 1:3, 1:3] = 1
    label = np.zeros((4, 4, 4), np.uint8)
    label[0, 0, 0] = 1
    label[1, 1, 1] = 2
    rec = preprocess_case(image, (1, 1, 1), PreprocessConfig(), label).record
    assert rec.label_voxels_outside_crop == 1


def test_no_crop_keeps_whole_volume():
    image = np.zeros((1, 4, 5, 6), np.float32)
    image[0, 1, 1, 1] = 1
    case = preprocess_case(image, (1, 1, 1), PreprocessConfig("none", crop_to_nonzero=False))
    assert case.record.crop_bbox == [(0, 4), (0, 5), (0, 6)]
    np.testing.assert_array_equal(case.image, image)


def test_anisotropic_resampling_shapes_and_sphere_round_trip():
    spacing = (3.0, 0.9, 0.9)
    shape = (21, 47, 53)
    brain = _sphere(shape, (10, 23, 26), 26.0, spacing)
    tumour = _sphere(shape, (11, 20, 28), 9.0, spacing)
    image = np.where(brain, 100.0, 0.0).astype(np.float32)[None]
    label = tumour.astype(np.uint8) * 2
    config = PreprocessConfig(target_spacing=(1.0, 1.0, 1.0))
    case = preprocess_case(image, spacing, config, label)
    rec = case.record
    expected = tuple(int(round(n * s)) for n, s in zip(rec.cropped_shape, spacing))
    assert rec.resampled_shape == expected == case.image.shape[1:] == case.label.shape
    assert case.image.dtype == np.float32 and set(np.unique(case.label)) <= {0, 2}

    restored = restore_to_original(case.label, rec, is_label=True)
    assert restored.shape == shape
    assert _dice(restored == 2, tumour) > 0.95

    # Probabilities: shape, background outside the crop, sums stay 1.
    onehot = np.stack([case.label == 0, case.label == 2]).astype(np.float32)
    probs = restore_to_original(onehot, rec, is_label=False)
    assert probs.shape == (2,) + shape and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    z0 = rec.crop_bbox[0][0]
    assert z0 > 0  # the brain sphere leaves empty slices, so there is an outside to check
    assert (probs[0, :z0] == 1).all() and (probs[1, :z0] == 0).all()
    assert _dice(probs[1] > 0.5, tumour) > 0.95
    sigmoid = restore_to_original(onehot[1:], rec, is_label=False, background_channel=None)
    assert sigmoid[0, ~brain].max() == 0.0


def test_resample_helpers_exact_shapes_and_identity():
    probs = np.random.default_rng(1).dirichlet([1, 1, 1], size=(5, 7, 9)).transpose(3, 0, 1, 2).astype(np.float32)
    np.testing.assert_array_equal(resample_probabilities(probs, (5, 7, 9)), probs)
    out = resample_probabilities(probs, (11, 3, 9))
    assert out.shape == (3, 11, 3, 9)
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-5)
    assert out.min() >= 0 and out.max() <= 1
    lab = np.array([0, 0, 4, 4], np.uint8).reshape(1, 1, 4)
    np.testing.assert_array_equal(resample_label(lab, (1, 1, 8)), [[[0, 0, 0, 0, 4, 4, 4, 4]]])


def test_restore_rejects_wrong_shape():
    rec = PreprocessRecord((4, 4, 4), [(0, 4)] * 3, (1, 1, 1), (1, 1, 1), (4, 4, 4), (4, 4, 4))
    with pytest.raises(ValueError):
        restore_to_original(np.zeros((4, 4, 5)), rec, is_label=True)
    with pytest.raises(ValueError):
        restore_to_original(np.zeros((4, 4, 4)), rec, is_label=False)


_HIPPO = Path(__file__).resolve().parents[2] / "shared" / "data" / "hippocampus"


@pytest.mark.skipif(not (_HIPPO / "labels").is_dir(), reason="real data ../shared/data/hippocampus not present")
def test_real_hippocampus_case_round_trips():
    from voxseg.io.image import read_volume

    name = sorted(p.name for p in (_HIPPO / "labels").glob("hippocampus_*.nii.gz"))[0]
    image, geo = read_volume(_HIPPO / "images" / name)
    label, _ = read_volume(_HIPPO / "labels" / name, dtype=None)
    mapping = LabelMapping.from_arrays(label)
    assert mapping.values == [0, 1, 2]
    cons = mapping.to_consecutive(label)
    case = preprocess_case(image[None], geo.spacing, PreprocessConfig(), cons)
    if case.record.label_voxels_outside_crop == 0:
        np.testing.assert_array_equal(restore_to_original(case.label, case.record, True), cons)
    resampled = preprocess_case(image[None], geo.spacing, PreprocessConfig(target_spacing=(0.8, 0.8, 0.8)), cons)
    back = restore_to_original(resampled.label, resampled.record, True)
    assert back.shape == cons.shape
    assert _dice(back > 0, cons > 0) > 0.9
