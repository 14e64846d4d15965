"""Inference backends (``voxseg predict --backend``, ``--precision``) and ONNX export, on a tiny network: OpenVINO
gives PyTorch's logits in fp32, the same labels through ``voxseg predict``, converts a network once per run folder
(then reads its cache), works from a read-only run folder, and is one line when missing; the ONNX file loads in
OpenVINO with the same logits and carries the run's metadata."""
import builtins
import json
import os
import stat
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from voxseg.cli import main
from voxseg.config import NetworkConfig, RunPlan, TrainConfig
from voxseg.data.phantoms import make_phantom_dataset
from voxseg.errors import InputError
from voxseg.infer import InferenceBackend, build_model, openvino_available, predict_volume
from voxseg.infer.backends import require_openvino

pytestmark = pytest.mark.skipif(not openvino_available(), reason="needs openvino")

CHANNELS = ["FLAIR", "T1", "T1ce", "T2"]


def _tiny_plan() -> RunPlan:
    plan = RunPlan(channel_names=list(CHANNELS), label_values=[0, 1, 2, 4],
                   network=NetworkConfig("unet", 3, {"base_width": 4, "depth": 3}),
                   train=TrainConfig(patch_size=[16, 16, 16]))
    plan.train.amp = "none"
    return plan


def _seeded_model(plan: RunPlan) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(plan).eval()
    with torch.no_grad():  # non-trivial norm affines, so a wrong channel or statistic shows
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs") / "run"
    folder.mkdir()
    plan = _tiny_plan()
    plan.save(folder / "plan.json")
    torch.save({"model": _seeded_model(plan).state_dict()}, folder / "checkpoint_best.pt")
    return folder


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return make_phantom_dataset(tmp_path_factory.mktemp("phantoms") / "ds", n_cases=2, shape=(20, 24, 20), seed=3)


def test_openvino_fp32_logits_agree_with_torch():
    plan = _tiny_plan()
    model = _seeded_model(plan)
    batch = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 4, 16, 16, 16)).astype(np.float32))
    shape = tuple(batch.shape)
    ours = InferenceBackend("openvino", "fp32").predictor(model, "none", shape, torch.device("cpu"))
    with torch.no_grad():
        reference = model(batch)
    np.testing.assert_allclose(ours(batch).numpy(), reference.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(ours(batch[:1]).numpy(), reference[:1].numpy(), atol=1e-4, rtol=1e-4)  # padded


def test_predict_volume_openvino_matches_torch_and_tta_shapes_convert_separately(tmp_path):
    plan = _tiny_plan()
    plan.train.patch_size = [16, 16, 8]  # not cubic: a quarter-turned TTA variant needs another batch shape
    model = _seeded_model(plan)
    image = np.random.default_rng(1).normal(size=(4, 20, 24, 18)).astype(np.float32)
    torch_probs = predict_volume(model, plan, image, backend=InferenceBackend("torch", "fp32"))
    backend = InferenceBackend("openvino", "fp32")
    ov_probs = predict_volume(model, plan, image, backend=backend, cache_dir=tmp_path)
    np.testing.assert_allclose(ov_probs, torch_probs, atol=1e-4)
    predict_volume(model, plan, image, backend=backend, cache_dir=tmp_path)  # same object: nothing converted
    assert backend.conversions == 1
    plan.train.patch_size = [16, 8, 16]
    predict_volume(model, plan, image, backend=backend, cache_dir=tmp_path)
    assert backend.conversions == 2
    assert len(list((tmp_path / ".cache" / "openvino").glob("*.xml"))) == 2


def _predict(run, phantoms, out, *extra):
    result = CliRunner().invoke(main, ["predict", str(run), str(phantoms / "imagesTr"), str(out), *extra])
    assert result.exit_code == 0, result.output
    return {p.name: np.asanyarray(nib.load(p).dataobj) for p in sorted(out.glob("*.nii.gz"))}


def test_predict_labels_are_the_same_with_openvino_and_torch_and_the_cache_is_reused(run, phantoms, tmp_path):
    reference = _predict(run, phantoms, tmp_path / "torch", "--backend", "torch", "--precision", "fp32")
    first = _predict(run, phantoms, tmp_path / "ov1", "--backend", "openvino", "--precision", "fp32")
    cached = sorted((run / ".cache" / "openvino").glob("*.xml"))
    assert len(cached) == 1  # one network, one window shape: converted once for both cases
    written = {p: p.stat().st_mtime_ns for p in cached + [c.with_suffix(".bin") for c in cached]}
    second = _predict(run, phantoms, tmp_path / "ov2", "--backend", "openvino", "--precision", "fp32")
    assert {p: p.stat().st_mtime_ns for p in written} == written  # read from the cache, not converted again
    assert reference.keys() == first.keys() == second.keys() and len(reference) == 2
    for name in reference:
        np.testing.assert_array_equal(first[name], reference[name])
        np.testing.assert_array_equal(second[name], reference[name])


def test_auto_backend_measures_once_and_saves_its_choice(run, phantoms, tmp_path):
    _predict(run, phantoms, tmp_path / "auto", "--backend", "auto")
    decisions = list((run / ".cache" / "openvino").glob("*-backend-*.json"))
    assert len(decisions) == 1
    decision = json.loads(decisions[0].read_text())
    assert decision["backend"] in ("torch", "openvino") and set(decision["seconds"]) == {"torch", "openvino"}


def test_read_only_run_folder_keeps_the_converted_network_in_memory(run, phantoms, tmp_path):
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    for name in ("plan.json", "checkpoint_best.pt"):
        (frozen / name).write_bytes((run / name).read_bytes())
    os.chmod(frozen, stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(frozen, os.W_OK):
            pytest.skip("this user can write into a read-only folder (root)")
        labels = _predict(frozen, phantoms, tmp_path / "out", "--backend", "openvino", "--precision", "fp32")
        assert len(labels) == 2 and not (frozen / ".cache").exists()
    finally:
        os.chmod(frozen, stat.S_IRWXU)


def test_read_only_cache_is_not_an_error(tmp_path, monkeypatch):
    """Where the cache folder cannot be made (a read-only run folder, also when running as root), the network
    stays in memory."""
    import voxseg.infer._openvino as ov_module

    monkeypatch.setattr(ov_module, "writable_folder", lambda folder: None)
    plan = _tiny_plan()
    image = np.random.default_rng(2).normal(size=(4, 18, 18, 18)).astype(np.float32)
    predict_volume(_seeded_model(plan), plan, image, backend=InferenceBackend("openvino", "fp32"), cache_dir=tmp_path)
    assert not (tmp_path / ".cache").exists()


def test_openvino_missing_is_one_line(run, phantoms, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    for name in [m for m in sys.modules if m == "openvino" or m.startswith("openvino.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(InputError, match="openvino package is not installed"):
        InferenceBackend("openvino")
    result = CliRunner().invoke(main, ["predict", str(run), str(phantoms / "imagesTr"), str(tmp_path / "o"),
                                       "--backend", "openvino"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install openvino" in lines[0], result.output


def test_openvino_is_imported_without_its_telemetry(tmp_path):
    """Importing openvino starts openvino-telemetry, which records a client id under ~/intel and sends events
    unless opted out; voxseg imports it with the telemetry package hidden, so neither happens (a fresh process,
    a fresh home folder)."""
    code = ("import torch\n"
            "from voxseg.infer import InferenceBackend, build_model\n"
            "from voxseg.config import NetworkConfig, RunPlan, TrainConfig\n"
            "plan = RunPlan(channel_names=['a'], label_values=[0, 1], network=NetworkConfig('unet', 3, "
            "{'base_width': 4, 'depth': 3}), train=TrainConfig(patch_size=[8, 8, 8]))\n"
            "InferenceBackend('openvino', 'fp32').predictor(build_model(plan).eval(), 'none', (1, 1, 8, 8, 8), "
            "torch.device('cpu'))\n"
            "import sys\n"
            "print(sys.modules['openvino.tools.ovc.telemetry_utils'].tm.__name__)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env["HOME"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("telemetry_stub")
    assert not (tmp_path / "intel").exists()


def test_onnx_export_loads_in_openvino_with_the_same_logits_and_metadata(run, tmp_path):
    onnx = pytest.importorskip("onnx")
    openvino = require_openvino()
    from voxseg.infer.onnx_export import export_onnx

    out = export_onnx(run, tmp_path / "net.onnx")
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["window"]) == [16, 16, 16] and json.loads(meta["channel_names"]) == CHANNELS
    assert json.loads(meta["label_values"]) == [0, 1, 2, 4] and meta["activation"] == "softmax"
    assert "normalisation" in meta and "voxseg_version" in meta and "label_scheme" in meta
    compiled = openvino.Core().compile_model(openvino.Core().read_model(str(out)), "CPU",
                                             {"INFERENCE_PRECISION_HINT": "f32"})
    batch = np.random.default_rng(3).normal(size=(2, 4, 16, 16, 16)).astype(np.float32)  # a free batch axis
    plan = RunPlan.load(run / "plan.json")
    model = build_model(plan).eval()
    model.load_state_dict(torch.load(run / "checkpoint_best.pt", weights_only=True)["model"])
    with torch.no_grad():
        reference = model(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(compiled(batch)[0], reference, atol=1e-4, rtol=1e-4)


def test_onnx_export_without_onnx_names_the_extra(run, tmp_path, monkeypatch):
    from voxseg.infer.onnx_export import export_onnx

    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "onnx" else real_import(name, *a, **k))
    with pytest.raises(InputError, match=r"voxseg\[onnx\]"):
        export_onnx(run, tmp_path / "net.onnx")
    assert not (tmp_path / "net.onnx").exists()


def test_cli_export_onnx_writes_the_file_and_needs_a_destination(run, tmp_path):
    pytest.importorskip("onnx")
    result = CliRunner().invoke(main, ["export", str(run), "--onnx", str(tmp_path / "net.onnx")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "net.onnx").stat().st_size > 1000
    result = CliRunner().invoke(main, ["export", str(run)])
    assert result.exit_code == 2 and "OUT.zip" in result.output and str(run) in result.output
    result = CliRunner().invoke(main, ["export", str(run), "--onnx", str(tmp_path / "b.onnx"),
                                       "--checkpoint", "best", "--checkpoint", "swa"])
    assert result.exit_code == 2 and "one --checkpoint" in result.output and not (tmp_path / "b.onnx").exists()


def test_weights_key_reads_batch_norm_counters_and_changes_with_the_weights():
    from voxseg.infer.backends import weights_key

    model = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.BatchNorm3d(2))  # a 0-dim int64 counter
    first = weights_key(model, (16, 16, 16))
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0, 0] += 1
    assert weights_key(model, (16, 16, 16)) != first
    assert weights_key(model, (16, 16, 16)) != weights_key(model, (32, 16, 16))


class _ShapeBaked(torch.nn.Module):
    """A network whose traced graph bakes its input's size in (a Python number taken from the shape)."""

    size_divisor = (4, 4, 4)

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(4, 2, 3, padding=1)

    def forward(self, x):
        return self.conv(x) + float(x.shape[-1])


def _traced_shapes(monkeypatch) -> list:
    import voxseg.infer._openvino as ov_module

    shapes, trace = [], ov_module.trace_network
    monkeypatch.setattr(ov_module, "trace_network",
                        lambda model, shape: shapes.append(tuple(shape)) or trace(model, shape))
    return shapes


def test_conversion_at_a_small_window_reshaped_gives_the_logits_of_tracing_at_the_window(monkeypatch):
    """The network is traced at twice its size divisor (memory) and reshaped to the window; the logits are those
    of the network traced at the window itself, and of PyTorch."""
    from voxseg.infer._openvino import _convert_traced, convert_network

    model = _seeded_model(_tiny_plan())
    shapes = _traced_shapes(monkeypatch)
    window = (1, 4, 16, 24, 16)
    small = require_openvino().Core().compile_model(convert_network(model, window), "CPU",
                                                     {"INFERENCE_PRECISION_HINT": "f32"})
    small_tracing = list(shapes)
    full = require_openvino().Core().compile_model(_convert_traced(model, window), "CPU",
                                                    {"INFERENCE_PRECISION_HINT": "f32"})
    assert small_tracing == [(1, 4, *(2 * d for d in model.size_divisor))]
    x = np.random.default_rng(4).normal(size=window).astype(np.float32)
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(small([x])[0], full([x])[0], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(small([x])[0], reference, atol=1e-4, rtol=1e-4)


def test_a_network_that_bakes_its_input_shape_in_is_traced_at_the_window(monkeypatch):
    from voxseg.infer._openvino import convert_network

    model = _ShapeBaked().eval()
    shapes = _traced_shapes(monkeypatch)
    window = (1, 4, 16, 16, 16)
    compiled = require_openvino().Core().compile_model(convert_network(model, window), "CPU",
                                                       {"INFERENCE_PRECISION_HINT": "f32"})
    assert shapes == [(1, 4, 8, 8, 8), window]  # the small trace failed the check at (12, 12, 12)
    x = np.random.default_rng(5).normal(size=window).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(compiled([x])[0], model(torch.from_numpy(x)).numpy(), atol=1e-4, rtol=1e-4)


def _validation_cases(plan, n=2):
    from voxseg.train.batches import PreparedCase

    rng = np.random.default_rng(5)
    cases = []
    for i in range(n):
        image = rng.normal(size=(4, 20, 24, 18)).astype(np.float32)
        label = (image[0] > 0.3).astype(np.uint8) + (image[1] > 1.0).astype(np.uint8)
        cases.append(PreparedCase(f"case_{i}", image, label))
    return cases


def test_validation_through_openvino_follows_the_changing_weights_and_writes_nothing(tmp_path, monkeypatch):
    from voxseg.infer import ValidationBackend
    from voxseg.train.validation import validation_dice

    monkeypatch.chdir(tmp_path)
    plan = _tiny_plan()
    model = _seeded_model(plan)
    cases = _validation_cases(plan)
    backend = ValidationBackend("openvino")
    cpu = torch.device("cpu")
    for _ in range(2):  # a stale network from the first validation would give the first Dice again
        ours = validation_dice(model, plan, cases, cpu, backend=backend)
        assert backend.last == "openvino"
        assert ours == pytest.approx(validation_dice(model, plan, cases, cpu, backend=ValidationBackend("torch")),
                                     abs=2e-3)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.2 * torch.randn_like(p))
    assert model.training  # back to training mode
    assert not list(tmp_path.rglob("*.xml"))  # converted in memory only


def test_auto_validation_backend_converts_only_where_the_saving_exceeds_the_conversion():
    from voxseg.infer import ValidationBackend

    plan = _tiny_plan()
    model = _seeded_model(plan)
    cpu, shape = torch.device("cpu"), (2, 4, 16, 16, 16)
    backend = ValidationBackend("auto")
    backend.for_validation(model, "none", shape, cpu, batches=1)
    assert backend.last == "torch" and backend.measured["seconds"]["convert"] is None  # a few ms: not tried
    faster = {"precision": "fp32", "seconds": {"torch": 2.0, "openvino": 1.0, "convert": 1.5}}
    backend.measured = faster
    backend.for_validation(model, "none", shape, cpu, batches=1)  # saves 1 s, converting costs 1.5 s
    assert backend.last == "torch"
    backend.for_validation(model, "none", shape, cpu, batches=2)
    assert backend.last == "openvino"
    backend.measured = {"precision": "fp32", "seconds": {"torch": 1.1, "openvino": 1.0, "convert": 0.1}}
    backend.for_validation(model, "none", shape, cpu, batches=100)  # within the margin: a tie keeps PyTorch
    assert backend.last == "torch"
    with pytest.raises(InputError):
        ValidationBackend("onnx")


def test_train_validates_through_openvino_in_memory_and_says_so(phantoms, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(phantoms), "--out", str(out), "--net-args",
                                       "base_width=4,depth=3", "--patch", "16x16x16", "--epochs", "2",
                                       "--iterations", "2", "--threads", "1", "--val-fraction", "0.5",
                                       "--val-backend", "openvino"])
    assert result.exit_code == 0, result.output
    assert "validation runs on openvino" in result.output
    assert json.loads((out / "plan.json").read_text())["train"]["val_backend"] == "openvino"
    assert not (out / ".cache").exists()
    rows = (out / "log.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[1].split(",")[rows[0].split(",").index("val_dice_mean")]
