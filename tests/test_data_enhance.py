"""Tests for voxseg.data.enhance (N4, anisotropic diffusion) and their PreprocessConfig fields."""
from __future__ import annotations

import json

import numpy as np
import pytest

from voxseg.data.enhance import (
    anisotropic_diffusion,
    diffusion_time_step_limit,
    enhance_image,
    n4_bias_correction,
)
from voxseg.data.preprocess import PreprocessConfig, preprocess_case
from voxseg.config import RunPlan

SPACING = (1.5, 1.0, 1.0)  # (sz, sy, sx) mm
NEW_FIELDS = ("n4", "n4_shrink", "n4_iterations", "n4_convergence", "denoise", "denoise_iterations",
              "denoise_conductance", "denoise_time_step", "enhance_channels")


def _coords_mm(shape, spacing):
    return np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")


def _biased_phantom(shape=(40, 56, 56), spacing=SPACING, seed=0):
    """Skull-stripped 'brain': an ellipsoid (background exactly 0) with a white-matter core (150)
    inside grey matter (100), 2 % noise, times a smooth bias field of about +-25 %.

    Returns:
        (biased image, bias-free image, core mask), all (Z, Y, X).
    """
    rng = np.random.default_rng(seed)
    zz, yy, xx = _coords_mm(shape, spacing)
    c = [(n - 1) * s / 2 for n, s in zip(shape, spacing)]
    r = ((zz - c[0]) / 26) ** 2 + ((yy - c[1]) / 25) ** 2 + ((xx - c[2]) / 25) ** 2
    brain, core = r < 1.0, r < 0.35
    clean = np.where(core, 150.0, 100.0) * (1 + 0.02 * rng.standard_normal(shape))
    clean = np.where(brain, clean, 0.0)
    log_bias = 0.25 * (yy - c[1]) / 25 + 0.12 * ((xx - c[2]) / 25) ** 2 - 0.1 * (zz - c[0]) / 26
    return (clean * np.exp(log_bias)).astype(np.float32), clean.astype(np.float32), core


def _cv(values):
    return float(values.std() / values.mean())


# --- N4 -----------------------------------------------------------------------------------------------


def test_n4_removes_a_known_multiplicative_bias():
    biased, clean, core = _biased_phantom()
    before = _cv(biased[core])
    out = n4_bias_correction(biased, SPACING, shrink=2, iterations=(50, 50, 50), convergence=1e-4)
    after = _cv(out[core])
    assert before > 0.06  # the bias field makes the homogeneous core vary by ~7 % (noise alone: 2 %)
    assert after < 0.5 * before, (before, after)
    assert after < 2.5 * _cv(clean[core])  # close to the bias-free 2 % noise
    assert out.dtype == np.float32 and out.shape == biased.shape
    assert np.all(out[biased == 0] == 0)  # background untouched


def test_n4_is_deterministic_and_leaves_an_empty_channel_alone():
    biased, _, _ = _biased_phantom(shape=(24, 32, 32))
    a = n4_bias_correction(biased, SPACING, iterations=(20, 20))
    b = n4_bias_correction(biased, SPACING, iterations=(20, 20))
    np.testing.assert_array_equal(a, b)
    zeros = np.zeros((8, 8, 8), np.float32)
    np.testing.assert_array_equal(n4_bias_correction(zeros, (1, 1, 1)), zeros)


# --- diffusion ----------------------------------------------------------------------------------------


def _noisy_step(shape=(12, 40, 40), seed=1):
    """Two flat halves (100 | 200 along x) plus Gaussian noise of std 10."""
    rng = np.random.default_rng(seed)
    clean = np.where(np.arange(shape[2]) < shape[2] // 2, 100.0, 200.0)[None, None, :] * np.ones(shape)
    return (clean + 10 * rng.standard_normal(shape)).astype(np.float32)


@pytest.mark.parametrize("method", ["gradient", "curvature"])
def test_diffusion_reduces_noise_and_keeps_the_edge(method):
    noisy = _noisy_step()
    half = noisy.shape[2] // 2
    out = anisotropic_diffusion(noisy, (1.0, 1.0, 1.0), method=method, iterations=10, conductance=1.0)
    flat = (slice(2, -2), slice(2, -2), slice(3, half - 5))  # away from the edge and the borders
    assert out[flat].std() < 0.6 * noisy[flat].std()
    contrast_in = noisy[..., half].mean() - noisy[..., half - 1].mean()
    contrast_out = out[..., half].mean() - out[..., half - 1].mean()
    assert contrast_out > 0.8 * contrast_in  # the step between the two voxels at the edge survives
    assert out.dtype == np.float32
    again = anisotropic_diffusion(noisy, (1.0, 1.0, 1.0), method=method, iterations=10, conductance=1.0)
    np.testing.assert_array_equal(out, again)


def test_time_step_limit_and_clipping():
    assert diffusion_time_step_limit((1.0, 1.0, 1.0)) == 0.0625
    assert diffusion_time_step_limit((3.0, 0.5, 0.8)) == 0.5 / 16
    noisy = _noisy_step(shape=(4, 12, 12))
    with pytest.warns(UserWarning, match="stability limit"):
        clipped = anisotropic_diffusion(noisy, (3.0, 0.5, 0.8), iterations=2, time_step=0.2)
    auto = anisotropic_diffusion(noisy, (3.0, 0.5, 0.8), iterations=2)
    np.testing.assert_array_equal(clipped, auto)
    with pytest.raises(ValueError):
        anisotropic_diffusion(noisy, (1, 1, 1), method="median")


# --- enhance_image / preprocess_case ------------------------------------------------------------------


def test_enhance_selected_channels_and_keep_background_zero():
    biased, _, _ = _biased_phantom(shape=(24, 32, 32))
    image = np.stack([biased, biased * 2])
    config = PreprocessConfig(n4=True, n4_iterations=(10, 10), denoise="gradient", denoise_iterations=2,
                              enhance_channels=[1])
    out = enhance_image(image, SPACING, config)
    np.testing.assert_array_equal(out[0], image[0])  # channel 0 not selected
    assert not np.array_equal(out[1], image[1])
    assert np.all(out[:, (image == 0).all(axis=0)] == 0)  # diffusion must not leak into the background
    with pytest.raises(ValueError, match="enhance_channels"):
        enhance_image(image, SPACING, PreprocessConfig(n4=True, enhance_channels=[2]))


def test_preprocess_case_with_enhancement_keeps_the_crop_and_is_repeatable():
    biased, _, _ = _biased_phantom(shape=(24, 32, 32))
    image = biased[None]
    plain = preprocess_case(image, SPACING, PreprocessConfig())
    config = PreprocessConfig(n4=True, n4_iterations=(10, 10), denoise="curvature", denoise_iterations=2,
                              target_spacing=(2.0, 2.0, 2.0))
    a = preprocess_case(image, SPACING, config)
    b = preprocess_case(image, SPACING, config)  # prediction time runs the same function
    np.testing.assert_array_equal(a.image, b.image)
    assert a.record.crop_bbox == plain.record.crop_bbox
    zero = preprocess_case(image, SPACING, PreprocessConfig(target_spacing=(2.0, 2.0, 2.0)))
    assert a.image.shape == zero.image.shape
    np.testing.assert_array_equal(a.image == 0, zero.image == 0)  # same background after z-scoring


# --- configuration ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        PreprocessConfig(n4=True),
        PreprocessConfig(n4=True, n4_shrink=2, n4_iterations=[10, 20], n4_convergence=1e-5,
                         denoise="curvature", denoise_iterations=3, denoise_conductance=2.5,
                         denoise_time_step=0.03, enhance_channels=[0, 2]),
        PreprocessConfig(denoise="gradient", enhance_channels=[]),
    ],
)
def test_config_round_trip_with_enhancement(config):
    again = PreprocessConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.to_dict() == config.to_dict()


def test_defaults_are_off_and_old_plans_load(tmp_path):
    default = PreprocessConfig()
    assert not default.n4 and default.denoise is None
    plan = RunPlan(channel_names=["t1"], label_values=[0, 1]).to_dict()
    for key in NEW_FIELDS:
        del plan["preprocess"][key]  # a plan.json written before these fields existed
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    assert RunPlan.load(path).preprocess == default


@pytest.mark.parametrize(
    "kwargs",
    [{"denoise": "median"}, {"n4_shrink": 0}, {"n4_iterations": []}, {"n4_convergence": 0},
     {"denoise_iterations": 0}, {"denoise_conductance": -1}, {"denoise_time_step": 0}, {"enhance_channels": [-1]}],
)
def test_config_rejects_bad_enhancement_values(kwargs):
    with pytest.raises(ValueError):
        PreprocessConfig(**kwargs)
