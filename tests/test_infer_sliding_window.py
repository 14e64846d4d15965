"""Sliding window: window grid by hand, exact reconstruction of position-independent predictors,
Gaussian weights, padding of small volumes, agreement with MONAI's sliding_window_inference, the device
(``--device auto|cpu|cuda``), and the network input agreeing with the training loader's patches."""
import types

import numpy as np

import pytest
import torch
from click.testing import CliRunner

from voxseg.cli import main
from voxseg.config import NetworkConfig, RunPlan, TrainConfig
from voxseg.data.loader import PatchLoader
from voxseg.errors import InputError
from voxseg.infer import (gaussian_importance_map, plan_input, predict_volume, sliding_window_predict,
                          window_starts)
from voxseg.nets import build_model, resolve_amp, resolve_device

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("size,patch,overlap,expected", [
    (10, 4, 0.5, [0, 2, 4, 6]),      # step 2 exactly
    (4, 4, 0.5, [0]),                # one window
    (11, 4, 0.5, [0, 2, 4, 5, 7]),   # ceil(7/2)+1 = 5 windows spread over 0..7
    (9, 4, 0.0, [0, 2, 5]),          # no overlap asked: still 3 windows to cover 9
    (6, 1, 0.5, [0, 1, 2, 3, 4, 5]),  # a 2-D network's one-slice window: each slice once, not twice
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
    from voxseg.nets import bf16_is_faster

    bf16_is_faster.cache_clear()
    with torch.inference_mode():
        assert resolve_amp("auto", torch.device("cpu")) in ("bf16", "none")
    assert resolve_amp("none", torch.device("cpu")) == "none"


def _scripted_clock(pass_seconds: list[float]):
    """A ``time`` stand-in whose ``perf_counter`` makes successive start/end pairs last ``pass_seconds``."""
    readings, now = [], 0.0
    for seconds in pass_seconds:
        readings += [now, now + seconds]
        now += seconds + 1.0
    return types.SimpleNamespace(perf_counter=iter(readings).__next__)


@pytest.mark.parametrize("passes, faster", [
    # warm-up fp32, warm-up bf16 (slow: kernel choice), then fp32 / bf16 alternating three times
    ([0.05, 0.9, 0.02, 0.03, 0.02, 0.01, 0.02, 0.01], True),  # one busy bf16 pass does not decide
    ([0.05, 0.01, 0.02, 0.019, 0.02, 0.019, 0.02, 0.019], False),  # under 10% faster is not faster
    ([0.05, 0.9, 0.02, 0.04, 0.02, 0.04, 0.02, 0.04], False),
])
def test_auto_mixed_precision_probe_ignores_its_warm_up_and_one_busy_pass(monkeypatch, passes, faster):
    import voxseg.nets.device as device_module
    from voxseg.nets import bf16_is_faster

    monkeypatch.setattr(device_module, "time", _scripted_clock(passes))
    bf16_is_faster.cache_clear()
    try:
        assert bf16_is_faster("cpu", 1) is faster
    finally:
        bf16_is_faster.cache_clear()


# --------------------------------------------------------------------------------------------- device


def test_auto_device_is_the_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_cuda_without_a_gpu_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="--device") as info:
        resolve_device("cuda")
    assert "\n" not in str(info.value) and "no CUDA GPU" in str(info.value)
    with pytest.raises(InputError, match="--device"):
        resolve_device("tpu")


def test_predict_cli_refuses_cuda_without_a_gpu(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "run"), str(tmp_path / "in"), str(tmp_path / "out"),
                                       "--device", "cuda"])
    assert result.exit_code == 2, result.output
    assert "--device" in result.output and "no CUDA GPU" in result.output


def _plan(**train) -> RunPlan:
    train = {"patch_size": [8, 8, 16], "amp": "none", **train}
    dims = 2 if train.get("mode", "3d") != "3d" else 3
    return RunPlan(channel_names=["t1", "t1ce", "t2", "flair"], label_values=[0, 1, 2],
                   network=NetworkConfig("unet", dims, {"base_width": 4, "depth": 3}), train=TrainConfig(**train))


def test_explicit_cpu_device_gives_numpy_probabilities_on_the_model_device():
    plan = _plan()
    torch.manual_seed(0)
    model = build_model(plan).eval()
    image = np.random.default_rng(0).normal(size=(4, 9, 13, 18)).astype(np.float32)
    explicit = predict_volume(model, plan, image, torch.device("cpu"))
    default = predict_volume(model, plan, image)  # the model's device
    assert isinstance(explicit, np.ndarray) and explicit.dtype == np.float32 and explicit.shape == (3, 9, 13, 18)
    np.testing.assert_array_equal(explicit, default)
    np.testing.assert_allclose(explicit.sum(0), 1.0, atol=1e-5)


@needs_cuda
def test_cuda_prediction_matches_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    plan = _plan()
    torch.manual_seed(0)
    model = build_model(plan).eval()
    image = np.random.default_rng(0).normal(size=(4, 9, 13, 18)).astype(np.float32)
    cpu = predict_volume(model, plan, image, torch.device("cpu"))
    gpu = predict_volume(model.to("cuda"), plan, image, torch.device("cuda"))
    assert isinstance(gpu, np.ndarray)
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)
    assert resolve_device("auto").type == "cuda" and resolve_amp("auto", torch.device("cuda")) == "fp16"


@needs_cuda
def test_cuda_window_loop_blends_on_the_device():
    image = np.random.default_rng(1).normal(size=(1, 12, 12, 12)).astype(np.float32)
    seen = []

    def predictor(batch):
        seen.append(batch.device.type)
        return torch.cat([batch, -batch], 1)

    out = sliding_window_predict(image, predictor, (8, 8, 8), 2, device="cuda")
    assert set(seen) == {"cuda"} and isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, sliding_window_predict(image, predictor, (8, 8, 8), 2, device="cpu"), atol=1e-6)


# ------------------------------------------------------------------- network input: training = inference


def _coded_image(shape=(4, 7, 10, 12)) -> np.ndarray:
    """Every voxel holds its own position (c, z, y, x) + 1, so a patch says where it was cut."""
    return (np.arange(np.prod(shape), dtype=np.float32) + 1).reshape(shape)


def test_training_patches_are_cut_from_the_inference_input_for_2_5d_with_a_channel_subset():
    plan = _plan(mode="2.5d", slices=3, channels=["flair", "t1"], patch_size=[1, 6, 8])
    image = _coded_image()
    label = np.zeros(image.shape[1:], np.uint8)
    label[2:5, 3:6, 4:9] = 1
    loader = PatchLoader([(image, label)], plan.train.patch_size[1:], batch_size=4, num_workers=0, seed=3,
                         mode=plan.train.mode, slices=plan.train.slices, channels=plan.channel_indices)
    whole = plan_input(image, plan)  # (2 * 3, Z, Y, X): flair's 3 slices, then t1's
    assert whole.shape == (plan.input_channels,) + image.shape[1:]
    _, ny, nx = image.shape[1:]
    for _ in range(5):
        x, _ = next(loader)
        for patch in x:
            centre = int(patch[1, 0, 0]) - 1  # flair (channel 3) at the centre slice: its position
            c, z, y0, x0 = np.unravel_index(centre, image.shape)
            assert c == 3
            np.testing.assert_array_equal(patch, whole[:, z, y0:y0 + 6, x0:x0 + 8])


def test_predict_volume_feeds_the_network_windows_of_the_inference_input():
    plan = _plan(mode="2.5d", slices=3, channels=["t2", "t1ce"], patch_size=[1, 6, 8])
    image = _coded_image()
    whole = torch.from_numpy(plan_input(image, plan))
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):  # (B, C * k, Y, X)
            seen.append(x.clone())
            return torch.zeros(x.shape[0], plan.num_outputs, *x.shape[2:]) * self.scale

    predict_volume(Recorder().eval(), plan, image, torch.device("cpu"))
    assert seen and all(b.shape[1] == plan.input_channels for b in seen)
    for batch in seen:
        for window in batch:
            c, z, y0, x0 = np.unravel_index(int(window[1, 0, 0]) - 1, image.shape)  # t2 at the centre slice
            assert c == 2
            assert torch.equal(window, whole[:, z, y0:y0 + 6, x0:x0 + 8])
