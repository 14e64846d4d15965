"""nnU-Net v2 model folders: checkpoint safety, networks against dynamic_network_architectures, preprocessing
against nnU-Net's formulas, and whole predictions against nnU-Net's own predictor (the oracles run when
nnunetv2 is installed in a separate environment; see _oracle_python)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import zipfile
from click.testing import CliRunner

from voxseg.cli import main
from voxseg.errors import InputError
from voxseg.infer.nnunet import (NNUNET_ARCHITECTURES, build_nnunet_network, compute_new_shape, find_nnunet_cases,
                                 is_nnunet_model_folder, is_nnunet_source, load_nnunet_model, load_nnunet_networks,
                                 load_nnunet_source,
                                 logits_to_labels, normalize_channel, predict_nnunet_path, read_nnunet_checkpoint,
                                 resample_data, separate_z_axis)
from voxseg.infer import InferenceBackend, openvino_available
from voxseg.infer.package import open_package, source_plan

sys.path.insert(0, str(Path(__file__).parent))
from nnunet_fixtures import architecture, make_model_folder, write_case  # noqa: E402

ORACLE_HOWTO = ("nnU-Net oracle not installed: python -m venv --system-site-packages /work/venv-nnunet && "
                "/work/venv-nnunet/bin/pip install nnunetv2 -c <(echo torch==2.13.0) && "
                "/work/venv-nnunet/bin/pip uninstall -y torchvision (PyPI's torchvision does not load with the CPU "
                "torch; nnU-Net's prediction does not need it); or set VOXSEG_NNUNET_PYTHON to such a python")


def _oracle_python() -> str | None:
    """A python with nnunetv2 (VOXSEG_NNUNET_PYTHON, else /work/venv-nnunet), or None."""
    for candidate in (os.environ.get("VOXSEG_NNUNET_PYTHON"), "/work/venv-nnunet/bin/python"):
        if candidate and Path(candidate).exists():
            probe = subprocess.run([candidate, "-c", "import nnunetv2, dynamic_network_architectures"],
                                   capture_output=True)
            if probe.returncode == 0:
                return candidate
    return None


ORACLE = _oracle_python()
needs_oracle = pytest.mark.skipif(ORACLE is None, reason=ORACLE_HOWTO)


def _read(path: Path) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


def _nnunet_predict(model: Path, inputs: Path, out: Path, folds: str = "0", mirror: bool = True,
                    checkpoint: str = "checkpoint_final.pth") -> None:
    script = Path(__file__).parent / "helpers" / "nnunet_oracle.py"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([ORACLE, str(script), str(model), str(inputs), str(out), folds, checkpoint,
                           "1" if mirror else "0"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


# -- whole predictions against nnU-Net's predictor ----------------------------------------------------------

_SLOW = pytest.mark.slow  # each runs nnU-Net's predictor in a subprocess (tens of seconds on a busy CPU)
ORACLE_CASES = {
    "3d_plain_mirror": dict(),
    "3d_resenc_two_folds": dict(residual=True, folds=(0, 1)),
    "3d_plain_no_mirror": dict(mirror=False),
    "3d_regions": dict(regions=True),
    "3d_transposed_anisotropic": dict(transpose=((2, 0, 1), (1, 2, 0)), spacing=(1.0, 1.0, 4.0),
                                      case_spacing=(0.9, 0.8, 4.6)),
    "3d_two_channels_ct_masked": dict(channels=2, schemes=["CTNormalization", "ZScoreNormalization"],
                                      masks=[False, True]),
    "3d_lowres_alone": dict(config_name="3d_lowres", spacing=(3.0, 2.0, 2.0)),
    "2d_plain": dict(config_name="2d", seed=2),
    "2d_image_files": dict(config_name="2d", two_d=True, seed=2),
}


@needs_oracle
@pytest.mark.parametrize("name", [n if n in ("3d_plain_mirror", "3d_regions") else pytest.param(n, marks=_SLOW)
                                  for n in ORACLE_CASES])
def test_labels_match_nnunet_predictor(tmp_path, name):
    opts = dict(ORACLE_CASES[name])
    mirror, case_spacing = opts.pop("mirror", True), opts.pop("case_spacing", (1.1, 0.9, 2.3))
    two_d = opts.pop("two_d", False)
    folds = opts.get("folds", (0,))
    model = make_model_folder(tmp_path / "models", **opts)
    for i in range(2 if name == "3d_plain_mirror" else 1):
        write_case(tmp_path / "in", f"case{i}", spacing=case_spacing, channels=opts.get("channels", 1), seed=i,
                   two_d=two_d)
    fold_text = ",".join(str(f) for f in folds)
    predict_nnunet_path(model, tmp_path / "in", tmp_path / "ours", folds=fold_text, tta="mirror" if mirror else "none",
                        amp="none")
    _nnunet_predict(model, tmp_path / "in", tmp_path / "ref", fold_text, mirror)
    refs = sorted((tmp_path / "ref").glob("*.nii.gz"))
    assert refs
    for ref_path in refs:
        ours, ours_img = _read(tmp_path / "ours" / ref_path.name)
        ref, ref_img = _read(ref_path)
        assert ours.shape == ref.shape
        agreement = (ours == ref).mean()
        assert agreement >= 0.999, f"{ref_path.name}: {agreement:.5f} of voxels agree"
        assert len(np.unique(ref)) > 1  # the random network predicts several labels
        assert ours_img.GetSpacing() == ref_img.GetSpacing() and ours_img.GetOrigin() == ref_img.GetOrigin()
        assert np.allclose(ours_img.GetDirection(), ref_img.GetDirection())


@needs_oracle
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("dims", [2, 3])
def test_network_matches_dynamic_network_architectures(tmp_path, residual, dims):
    """Same state-dict keys (in order) and the same outputs for the same weights."""
    arch = architecture(dims, residual)
    net = build_nnunet_network(arch, 2, 3)
    weights = tmp_path / "w.pt"
    torch.manual_seed(0)
    x = torch.randn(1, 2, *([16] * dims))
    torch.save({"state": net.state_dict(), "x": x, "arch": arch}, weights)
    script = (
        "import sys, pydoc, torch\n"
        "d = torch.load(sys.argv[1], weights_only=False)\n"
        "a = d['arch']; kw = dict(a['arch_kwargs'])\n"
        "for k in a['_kw_requires_import']:\n"
        "    kw[k] = pydoc.locate(kw[k]) if kw[k] is not None else None\n"
        "cls = pydoc.locate(a['network_class_name'])\n"
        "net = cls(input_channels=2, num_classes=3, deep_supervision=False, **kw).eval()\n"
        "assert list(net.state_dict()) == list(d['state']), 'keys differ'\n"
        "net.load_state_dict(d['state'])\n"
        "with torch.no_grad():\n"
        "    torch.save(net(d['x']), sys.argv[2])\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([ORACLE, "-c", script, str(weights), str(tmp_path / "y.pt")], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with torch.no_grad():
        ours = net(x)
    assert torch.allclose(ours, torch.load(tmp_path / "y.pt"), atol=1e-5)


# -- hand checks (no nnU-Net needed) ------------------------------------------------------------------------

def test_model_folder_detected_and_read(tmp_path):
    model = make_model_folder(tmp_path, folds=(0, 1), residual=True)
    assert is_nnunet_model_folder(model) and not is_nnunet_model_folder(tmp_path)
    loaded = load_nnunet_model(model, folds="1")
    assert [f.name for f in loaded.folds] == ["fold_1"]
    assert loaded.configuration_name == "3d_fullres" and loaded.folds[0].mirror_axes == (0, 1, 2)
    assert len(load_nnunet_model(model).folds) == 2
    with pytest.raises(InputError, match="folds 3 not found"):
        load_nnunet_model(model, folds="3")
    with pytest.raises(InputError, match="checkpoint_latest.pth"):
        load_nnunet_model(model, which="last")


def test_best_checkpoint_falls_back_to_final(tmp_path):
    model = make_model_folder(tmp_path)
    assert load_nnunet_model(model, which="best").folds[0].path.name == "checkpoint_final.pth"
    assert load_nnunet_model(model, which="final").folds[0].path.name == "checkpoint_final.pth"



def test_networks_hold_the_checkpoint_weights_without_a_copy(tmp_path):
    loaded = load_nnunet_model(make_model_folder(tmp_path, folds=(0, 1), residual=True))
    nets = load_nnunet_networks(loaded)
    for net, fold in zip(nets, loaded.folds):
        params = dict(net.named_parameters())
        assert params and set(params) <= set(fold.weights)
        assert all(p.data_ptr() == fold.weights[k].data_ptr() and p.device.type == "cpu" for k, p in params.items())
    first = next(iter(loaded.folds[0].weights))
    assert not torch.equal(loaded.folds[0].weights[first], loaded.folds[1].weights[first])  # each fold its own

class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_hostile_checkpoint_refused_in_one_line(tmp_path):
    model = make_model_folder(tmp_path)
    path = model / "fold_0" / "checkpoint_final.pth"
    data = torch.load(path, weights_only=False)
    data["logging"]["payload"] = _Payload()
    torch.save(data, path)
    with pytest.raises(InputError) as err:
        read_nnunet_checkpoint(path)
    assert "refused without running" in str(err.value) and "\n" not in str(err.value)


def test_checkpoint_with_unknown_entries_refused(tmp_path):
    path = tmp_path / "c.pth"
    torch.save({"network_weights": {}, "something_else": 1}, path)
    with pytest.raises(InputError, match="unexpected entries something_else"):
        read_nnunet_checkpoint(path)


def test_unsupported_architecture_named(tmp_path):
    arch = architecture(3, False)
    arch["network_class_name"] = "my_lab.nets.FancyUNet"
    with pytest.raises(InputError, match="FancyUNet"):
        build_nnunet_network(arch, 1, 2)
    assert set(NNUNET_ARCHITECTURES) == {"PlainConvUNet", "ResidualEncoderUNet"}


def test_state_dict_keys_follow_dynamic_network_architectures_layout():
    keys = list(build_nnunet_network(architecture(3, True), 1, 2).state_dict())
    assert keys[0] == "encoder.stem.convs.0.conv.weight"
    assert "encoder.stages.1.blocks.0.skip.1.conv.weight" in keys  # avg-pool, then the 1x1 projection
    assert "encoder.stages.0.blocks.0.conv1.all_modules.0.weight" in keys
    assert any(k.startswith("decoder.encoder.") for k in keys) and keys[-1] == "decoder.seg_layers.1.bias"
    plain = list(build_nnunet_network(architecture(2, False), 1, 2).state_dict())
    assert plain[0] == "encoder.stages.0.0.convs.0.conv.weight"


def test_normalisation_formulas():
    rng = np.random.default_rng(0)
    image = rng.normal(50, 10, (6, 7, 8)).astype(np.float32)
    mask = np.zeros(image.shape, bool)
    mask[1:5, 2:6, 1:7] = True
    z = normalize_channel(image.copy(), "ZScoreNormalization", False, mask, None)
    assert abs(z.mean()) < 1e-5 and abs(z.std() - 1) < 1e-4
    zm = normalize_channel(image.copy(), "ZScoreNormalization", True, mask, None)
    assert abs(zm[mask].mean()) < 1e-5 and np.array_equal(zm[~mask], image[~mask])
    props = {"mean": 40.0, "std": 5.0, "percentile_00_5": 30.0, "percentile_99_5": 60.0}
    ct = normalize_channel(image.copy(), "CTNormalization", False, mask, props)
    assert np.allclose(ct, (np.clip(image, 30, 60) - 40) / 5, atol=1e-5)
    r = normalize_channel(image.copy(), "RescaleTo01Normalization", False, mask, None)
    assert r.min() == 0 and abs(r.max() - 1) < 1e-6
    assert np.allclose(normalize_channel(np.full((2, 2), 255.0, np.float32), "RGBTo01Normalization", False, mask,
                                         None), 1)
    assert np.array_equal(normalize_channel(image.copy(), "NoNormalization", False, mask, None), image)


def test_resampling_rules():
    assert compute_new_shape((10, 20, 30), (3.0, 1.0, 1.0), (1.5, 2.0, 1.0)) == (20, 10, 30)
    assert separate_z_axis((4.0, 1.0, 1.0), (1.0, 1.0, 1.0)) == 0       # coarse input axis
    assert separate_z_axis((1.0, 1.0, 1.0), (1.0, 5.0, 1.0)) == 1       # coarse target axis
    assert separate_z_axis((2.0, 1.0, 1.0), (1.0, 1.0, 1.0)) is None    # ratio 2 <= 3
    assert separate_z_axis((4.0, 4.0, 1.0), (1.0, 1.0, 1.0)) is None    # two coarse axes: not separate
    data = np.random.default_rng(1).normal(size=(1, 5, 9, 8)).astype(np.float32)
    out = resample_data(data, (10, 9, 8), (4.0, 1.0, 1.0), (2.0, 1.0, 1.0))
    assert np.array_equal(out[0, ::2], data[0]) and np.array_equal(out[0, 1::2], data[0])  # nearest along z
    smooth = resample_data(data, (7, 12, 11), (1.0, 1.0, 1.0), (0.7, 0.75, 0.73))
    assert smooth.min() >= data.min() and smooth.max() <= data.max()  # clipped as scikit-image's resize


def test_logits_to_labels_is_trilinear_then_argmax():
    torch.manual_seed(0)
    logits = torch.randn(4, 5, 6, 7)
    shape = (9, 11, 5)
    labels = logits_to_labels(logits, shape, (1.0, 1.0, 1.0), (0.55, 0.55, 1.4))
    full = torch.nn.functional.interpolate(logits[None], size=shape, mode="trilinear", align_corners=False)[0]
    assert (labels == full.argmax(0).numpy()).mean() > 0.999
    regions = logits_to_labels(logits[:3], shape, (1.0, 1.0, 1.0), (0.55, 0.55, 1.4), regions=[1, 2, 3])
    expected = np.zeros(shape, np.int16)
    for i, value in enumerate([1, 2, 3]):
        expected[full[i].numpy() > 0] = value
    assert (regions == expected).mean() > 0.999


def test_geometry_round_trip_and_cases(tmp_path):
    model = make_model_folder(tmp_path / "m")
    paths = write_case(tmp_path / "in", "caseA", shape=(9, 12, 10))
    assert find_nnunet_cases(tmp_path / "in", 1, ".nii.gz") == {"caseA": paths}
    out = predict_nnunet_path(model, paths[0], tmp_path / "out" / "a.nii.gz", tta="none", amp="none")[0][1]
    labels, image = _read(out)
    _, source = _read(paths[0])
    assert labels.shape == (9, 12, 10) and labels.dtype == np.uint8
    assert image.GetSpacing() == source.GetSpacing() and image.GetOrigin() == source.GetOrigin()
    assert image.GetDirection() == source.GetDirection()
    assert labels[:2].max() == 0  # the first two slices are zero in every channel: outside the crop


def test_bf16_pass_keeps_the_labels(tmp_path):
    """bf16 autocast changes labels only where classes nearly tie (random weights: many near-ties)."""
    model = make_model_folder(tmp_path / "m")
    write_case(tmp_path / "in", "caseA")
    fp32 = predict_nnunet_path(model, tmp_path / "in", tmp_path / "fp32", amp="none")[0][1]
    bf16 = predict_nnunet_path(model, tmp_path / "in", tmp_path / "bf16", amp="bf16")[0][1]
    assert (_read(fp32)[0] == _read(bf16)[0]).mean() > 0.99


@pytest.mark.parametrize("dims", [2, 3])
def test_residual_encoder_runs_as_a_bf16_copy(dims):
    """A window large enough for the bf16 weight copy (no autocast): the strided residual skip pools bf16 input
    (torch's CPU pooling has no bf16 3-D kernel), and the labels stay those of float32."""
    from voxseg.infer import inference_precision

    net = build_nnunet_network(architecture(dims, True), 1, 3).eval()
    x = torch.randn(1, 1, *[16] * dims, generator=torch.Generator().manual_seed(0))
    copy, dtype, context = inference_precision(net, "bf16", torch.device("cpu"), window_voxels=2**40)
    assert dtype == torch.bfloat16
    with torch.no_grad(), context:
        low = copy(x.to(dtype)).float()
        full = net(x)
    assert low.shape == full.shape
    assert (low.argmax(1) == full.argmax(1)).float().mean() > 0.95


def test_missing_channel_named(tmp_path):
    write_case(tmp_path / "in", "caseA", channels=1)
    with pytest.raises(InputError, match="lacks channel"):
        find_nnunet_cases(tmp_path / "in", 2, ".nii.gz")


def test_cli_predicts_nnunet_folder(tmp_path):
    model = make_model_folder(tmp_path / "m")
    write_case(tmp_path / "in", "caseA", shape=(8, 10, 9))
    done = subprocess.run([sys.executable, "-m", "voxseg.cli", "predict", str(model), str(tmp_path / "in"),
                           str(tmp_path / "out"), "--tta", "none", "--checkpoint", "final"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "caseA.nii.gz").exists() and "nnU-Net 3d_fullres" in done.stdout


# -- the OpenVINO backend (--backend) ------------------------------------------------------------------------

needs_openvino = pytest.mark.skipif(not openvino_available(), reason="needs openvino")
BACKEND_CASES = {"3d_two_folds_mirror": dict(residual=True, folds=(0, 1)), "3d_regions": dict(regions=True),
                 "2d": dict(config_name="2d", seed=2)}


@needs_openvino
@pytest.mark.parametrize("name", list(BACKEND_CASES))
def test_openvino_fp32_labels_match_torch_fp32(tmp_path, name):
    """Each fold converted once (two cases, mirroring on), cached in the model folder, the same labels as
    PyTorch in float32."""
    opts = BACKEND_CASES[name]
    model = make_model_folder(tmp_path / "models", **opts)
    for i in range(2):
        write_case(tmp_path / "in", f"case{i}", shape=(10, 14, 12), seed=i)
    folds = ",".join(str(f) for f in opts.get("folds", (0,)))
    engine = InferenceBackend("openvino", "fp32")
    ours = predict_nnunet_path(model, tmp_path / "in", tmp_path / "ov", folds=folds, amp="none", backend=engine)
    ref = predict_nnunet_path(model, tmp_path / "in", tmp_path / "pt", folds=folds, amp="none", backend="torch")
    n_folds = len(opts.get("folds", (0,)))
    assert engine.conversions == n_folds and set(engine.choices.values()) == {"openvino fp32"}
    assert len(list((model / ".cache" / "openvino").glob("*.xml"))) == n_folds
    for (_, ov_path, _), (_, pt_path, _) in zip(ours, ref):
        ov, pt = _read(ov_path)[0], _read(pt_path)[0]
        assert len(np.unique(pt)) > 1 and (ov == pt).mean() >= 0.999, (ov == pt).mean()
    again = InferenceBackend("openvino", "fp32")  # a second process: read from the model folder's cache
    predict_nnunet_path(model, tmp_path / "in" / "case0_0000.nii.gz", tmp_path / "again.nii.gz", folds=folds,
                        amp="none", backend=again)
    assert again.conversions == 0


# -- nnU-Net models as voxseg model packages (voxseg export) -----------------------------------------------

def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A two-fold residual-encoder model folder, its package (via the CLI), the package unpacked, and a case."""
    root = tmp_path_factory.mktemp("nnpkg")
    model = make_model_folder(root / "models", residual=True, folds=(0, 1))
    write_case(root / "in", "caseA", shape=(9, 12, 10))
    package = root / "model.zip"
    result = _run("export", model, package)
    assert result.exit_code == 0, result.output
    unpacked = root / "unpacked"
    with zipfile.ZipFile(package) as archive:
        archive.extractall(unpacked)
    return model, package, unpacked, root / "in"


def test_package_predicts_exactly_as_the_model_folder(exported, tmp_path):
    model, package, unpacked, inputs = exported
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same labels bit for bit
    try:
        outs = {}
        for name, source in (("folder", model), ("zip", package), ("unpacked", unpacked)):
            result = predict_nnunet_path(source, inputs, tmp_path / name, amp="none", backend="torch")
            outs[name] = _read(result[0][1])[0]
    finally:
        torch.set_num_threads(threads)
    assert len(np.unique(outs["folder"])) > 1
    assert np.array_equal(outs["folder"], outs["zip"]) and np.array_equal(outs["folder"], outs["unpacked"])
    loaded = load_nnunet_source(package, folds="1", which="final")
    assert [f.name for f in loaded.folds] == ["fold_1"] and loaded.folds[0].mirror_axes == (0, 1, 2)
    assert loaded.configuration_name == "3d_fullres" and loaded.folds[0].trainer_name == "nnUNetTrainer"


def test_cli_predicts_an_nnunet_package(exported, tmp_path):
    _, package, _, inputs = exported
    result = _run("predict", package, inputs, tmp_path / "out", "--tta", "none", "--precision", "fp32", "--folds", "0")
    assert result.exit_code == 0, result.output
    assert "nnU-Net 3d_fullres ResidualEncoderUNet: folds fold_0" in result.output
    assert (tmp_path / "out" / "caseA.nii.gz").exists()


@needs_openvino
def test_cli_predicts_an_nnunet_package_with_openvino(exported, tmp_path):
    """--backend openvino on a package: its converted networks stay in memory (nothing written beside it)."""
    _, package, unpacked, inputs = exported
    for source in (package, unpacked):
        before = sorted(p.name for p in source.parent.iterdir())
        out = tmp_path / source.name
        result = _run("predict", source, inputs, out, "--backend", "openvino", "--precision", "fp32", "--folds", "0")
        assert result.exit_code == 0, result.output
        assert "backend: openvino, precision: fp32" in result.output and "openvino fp32" in result.output
        assert (out / "caseA.nii.gz").exists()
        assert sorted(p.name for p in source.parent.iterdir()) == before
        assert not (unpacked / ".cache").exists()


def test_nnunet_package_holds_weights_as_safetensors_and_no_paths(exported):
    model, package, _, _ = exported
    opened = open_package(package)
    assert opened.kind == "nnunet" and opened.manifest["format_version"] == 2 and is_nnunet_source(package)
    assert sorted(opened.members) == ["dataset.json", "fold_0/checkpoint_final.safetensors",
                                      "fold_1/checkpoint_final.safetensors", "model_card.json", "model_card.md",
                                      "nnunet.json", "plans.json"]
    assert opened.members["plans.json"] == (model / "plans.json").read_bytes()
    info = opened.json("nnunet.json")
    assert info["configuration"] == "3d_fullres" and info["folds"]["fold_0"]["mirror_axes"] == [0, 1, 2]
    assert info["folds"]["fold_0"]["shared"]  # the decoder's copy of the encoder is stored once
    card = opened.json("model_card.json")
    assert card["source_folder"] == model.name and [f["name"] for f in card["folds"]] == ["fold_0", "fold_1"]
    for name, data in opened.members.items():
        assert str(model.parent).encode() not in data, name
    with pytest.raises(InputError, match="not a voxseg run"):
        source_plan(package)  # not a start for voxseg training


def test_nnunet_package_checkpoint_and_folds_named(exported):
    _, package, _, _ = exported
    with pytest.raises(InputError, match="holds checkpoint_final weights, not checkpoint_latest"):
        load_nnunet_source(package, which="last")
    with pytest.raises(InputError, match="folds 3 not found"):
        load_nnunet_source(package, folds="3")


def _repack(good: Path, out: Path, change) -> Path:
    """A copy of ``good`` with ``change(members: dict, manifest: dict)`` applied (the manifest is not rehashed)."""
    with zipfile.ZipFile(good) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    manifest = json.loads(members.pop("manifest.json"))
    change(members, manifest)
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("manifest.json", json.dumps(manifest))
        for name, data in members.items():
            archive.writestr(name, data)
    return out


def _flip(members, name):
    data = members[name]
    members[name] = data[:-3] + bytes([data[-3] ^ 1]) + data[-2:]


def _declare(members, manifest, name, data):
    members[name] = data
    manifest["members"].append({"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})


BAD_NNUNET = {
    "unknown member": (lambda m, d: _declare(m, d, "fold_0/checkpoint_final.pth", b"x"),
                       "unknown member fold_0/checkpoint_final.pth"),
    "unlisted member": (lambda m, d: m.update({"run_me.py": b"print(1)"}), "unknown member run_me.py"),
    "checksum mismatch": (lambda m, d: _flip(m, "fold_1/checkpoint_final.safetensors"), "checksum mismatch"),
    "missing member": (lambda m, d: m.pop("nnunet.json"), "missing member nnunet.json"),
    "unknown kind": (lambda m, d: d.update(kind="tensorflow"), "unknown package kind 'tensorflow'"),
    "no nnunet.json": (lambda m, d: (m.pop("nnunet.json"), d.update(members=[e for e in d["members"]
                                                                            if e["name"] != "nnunet.json"])),
                       "missing member nnunet.json"),
}


@pytest.mark.parametrize("kind", sorted(BAD_NNUNET))
def test_a_bad_nnunet_package_is_refused_in_one_line(kind, exported, tmp_path):
    _, package, _, inputs = exported
    change, problem = BAD_NNUNET[kind]
    bad = _repack(package, tmp_path / "bad.zip", change)
    out = tmp_path / "out"
    result = _run("predict", bad, inputs, out)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0] and problem in errors[0], result.output
    assert "Traceback" not in result.output and not out.exists()


def test_export_of_an_nnunet_folder_refuses_in_one_line(exported, tmp_path):
    model, _, _, _ = exported
    result = _run("export", model, tmp_path / "m.zip", "--checkpoint", "swa")
    assert result.exit_code == 2 and "checkpoint_latest.pth" not in result.output
    assert "--checkpoint must be one of" in result.output and not (tmp_path / "m.zip").exists()
    result = _run("export", model, tmp_path / "m.zip", "--checkpoint", "last")
    assert result.exit_code == 2 and "no checkpoint_latest.pth" in result.output, result.output
    result = _run("export", model, tmp_path / "m.zip", "--folds", "0,7")
    assert result.exit_code == 2 and "folds 7 not found" in result.output, result.output
    assert not list(tmp_path.iterdir())
