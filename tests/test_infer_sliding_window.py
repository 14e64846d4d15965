"""Sliding window: window grid by hand, exact reconstruction of position-independent predictors,
Gaussian weights, padding of small volumes, and agreement with MONAI's sliding_window_inference."""
import numpy as np
import pytest
import torch

from voxseg.data.tiling import gaussian_importance_map, sliding_window_predict, window_starts


@pytest.mark.parametrize("size,patch,overlap,expected", [
    (10, 4, 0.5, [0, 2, 4, 6]),      # step 2 exactly
    (4, 4, 0.5, [0]),                # one window
    (11, 4, 0.5, [0, 2, 4, 5, 7]),   # ceil(7/2)+1 = 5 windows spread over 0..7
    (9, 4, 0.0, [0, 2, 5]),          # no overlap asked: still 3 windows to cover 9
])
def test_window_starts_by_hand(size, patch, overlap, expected):
    starts = window_starts(size, patch, overlap)
    assert starts == expected
    assert starts[-1] + patch == size


def test_window_starts_rejects_bad_arguments():
    with pytest.raises(ValueError, match="smaller than the window"):
        window_starts(3, 4, 0.5)
    with pytest.raises(ValueError, match="overlap"):
        window_starts(8, 4, 1.0)


def test_gaussian_peak_centre_and_positive():
    g = gaussian_importance_map((9, 9, 9))
    assert g.shape == (9, 9, 9)
    assert g[4, 4, 4] == pytest.approx(1.0)
    assert g.min() > 0
    assert g[0, 0, 0] < g[2, 2, 2] < g[4, 4, 4]


@pytest.mark.parametrize("shape,patch", [((2, 20, 17, 13), (8, 8, 8)), ((1, 5, 30, 30), (1, 16, 16)),
                                         ((1, 6, 7, 5), (8, 8, 8))])
def test_position_independent_predictor_is_reconstructed_exactly(shape, patch):
    rng = np.random.default_rng(0)
    image = rng.normal(size=shape).astype(np.float32)
    weight = torch.tensor([[1.5, -0.5][: shape[0]]] * 3, dtype=torch.float32)

    def predictor(batch):  # a 1x1 convolution: each output voxel depends on its own voxel only
        return torch.einsum("oc,bc...->bo...", weight, batch)

    out = sliding_window_predict(image, predictor, patch, 3, overlap=0.5, activation="none")
    expected = np.einsum("oc,c...->o...", weight.numpy(), image)
    assert out.shape == (3,) + shape[1:]
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_softmax_outputs_sum_to_one_and_progress_counts_windows():
    image = np.random.default_rng(1).normal(size=(1, 12, 12, 12)).astype(np.float32)
    counted = []
    out = sliding_window_predict(image, lambda b: torch.cat([b, -b], 1), (8, 8, 8), 2, overlap=0.5,
                                 progress=counted.append)
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-5)
    assert sum(counted) == len(window_starts(12, 8, 0.5)) ** 3


def test_agrees_with_monai_on_position_dependent_predictor():
    monai_inferers = pytest.importorskip("monai.inferers")
    rng = np.random.default_rng(2)
    image = rng.normal(size=(1, 25, 25, 25)).astype(np.float32)
    ramp = torch.linspace(0, 1, 9)[None, None, :, None, None]

    def predictor(batch):  # depends on the position inside the window, so blending weights matter
        return batch * (1 + ramp)

    ours = sliding_window_predict(image, predictor, (9, 9, 9), 1, overlap=0.5, activation="none")
    theirs = monai_inferers.sliding_window_inference(torch.from_numpy(image)[None], (9, 9, 9), 4, predictor,
                                                     overlap=0.5, mode="gaussian", sigma_scale=0.125)
    # Odd window so both Gaussians share the centre voxel, and the same grid (25 = 9 + 4 * 4): they
    # differ only where MONAI clamps tiny products of weights to 1e-3: at the volume's outer voxels, whose
    # every window sees them near its border. Compare the rest.
    inner = (slice(None),) + (slice(3, -3),) * 3
    np.testing.assert_allclose(ours[inner], theirs[0].numpy()[inner], rtol=0.01, atol=0.01)


def test_auto_mixed_precision_probe_works_under_inference_mode():
    from voxseg.nets.runtime import _bf16_is_faster, resolve_amp

    _bf16_is_faster.cache_clear()
    with torch.inference_mode():
        assert resolve_amp("auto", torch.device("cpu")) in ("bf16", "none")
    assert resolve_amp("none", torch.device("cpu")) == "none"
