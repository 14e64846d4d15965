"""Model packages (``voxseg export``): a package predicts exactly as its run folder (zip and unpacked), trains
``--init-from``, holds what its manifest says, and every package whose content is not what it declares is refused
in one line naming it (exit 2, no traceback, nothing written)."""
import hashlib
import json
import subprocess
import sys
import zipfile

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from voxseg.cli import main
from voxseg.data.phantoms import make_phantom_dataset

# One thread: predicting is then repeatable bit for bit, so "the same labels" can be asserted exactly.
TINY = ["--net-args", "base_width=4,depth=3", "--patch", "16x16x16", "--epochs", "1", "--iterations", "2",
        "--threads", "1"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "voxseg.cli", *map(str, args)], capture_output=True, text=True)


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return make_phantom_dataset(tmp_path_factory.mktemp("phantoms") / "ds", n_cases=4, shape=(20, 24, 20), seed=3)


@pytest.fixture(scope="module")
def trained(phantoms, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    result = _cli("train", phantoms, "--out", run, *TINY)
    assert result.returncode == 0, result.stderr
    return run


@pytest.fixture(scope="module")
def package(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("pkg") / "model.zip"
    result = _cli("export", trained, out)
    assert result.returncode == 0, result.stderr
    assert out.exists() and not list(out.parent.glob(".*tmp*"))
    return out


def _labels(path):
    return np.asarray(nib.load(str(path)).dataobj)


def test_package_predicts_as_the_run_folder(trained, package, phantoms, tmp_path):
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(package) as archive:
        archive.extractall(unpacked)
    image = phantoms / "imagesTr" / "phantom_002_0000.nii.gz"
    outputs = {}
    for name, source in (("run", trained), ("zip", package), ("folder", unpacked)):
        outputs[name] = tmp_path / f"{name}.nii.gz"
        result = _run("predict", source, image, outputs[name], "--backend", "torch")  # auto times: exact labels need one
        assert result.exit_code == 0, result.output
    reference = _labels(outputs["run"])
    for name in ("zip", "folder"):
        assert np.array_equal(_labels(outputs[name]), reference), name


def test_package_holds_what_its_manifest_declares(package, trained):
    with zipfile.ZipFile(package) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        names = set(archive.namelist()) - {"manifest.json"}
        assert manifest["format_version"] == 1
        assert {m["name"] for m in manifest["members"]} == names
        for member in manifest["members"]:
            data = archive.read(member["name"])
            assert len(data) == member["size"] and hashlib.sha256(data).hexdigest() == member["sha256"]
        plan = json.loads(archive.read("plan.json"))
        assert plan == {**json.loads((trained / "plan.json").read_text()), "dataset": "ds"}  # no path: a name
        weights = load_safetensors(archive.read("checkpoint_best.safetensors"))
        card = json.loads(archive.read("model_card.json"))
        dataset = json.loads(archive.read("dataset.json"))
    assert {"checkpoint_best.safetensors", "labels.json", "model_card.md", "fingerprint.json", "split.json"} <= names
    assert card["parameters"] == sum(t.numel() for k, t in weights.items() if "running" not in k
                                     and "num_batches" not in k)
    model = card["models"][0]
    assert model["training_cases"] == 3 and set(model["checkpoints"]["best"]["validation_dice"]) == {
        "necrosis", "edema", "enhancing"}
    assert card["trained_with"][0].startswith("voxseg train ") and card["hardware"]
    assert "/" not in json.dumps(dataset["case_ids"]) and "root" not in dataset  # no file paths of the trainer


def test_train_init_from_a_package(package, phantoms, tmp_path):
    result = _run("train", phantoms, "--out", tmp_path / "run", "--init-from", package, *TINY)
    assert result.exit_code == 0, result.output
    assert "initialised 36/36 tensors from" in result.output


def _rebuild(good, out, members=None, manifest=None, extra=(), drop=(), rehash=True):
    """A copy of the package ``good`` at ``out``: members replaced (``members``), added to the zip only
    (``extra``: name -> bytes), left out of the zip only (``drop``); the manifest recomputed for replaced members
    (``rehash``) and then changed by ``manifest(dict)``."""
    with zipfile.ZipFile(good) as archive:
        content = {n: archive.read(n) for n in archive.namelist()}
    decl = json.loads(content.pop("manifest.json"))
    for name, data in (members or {}).items():
        content[name] = data
        if rehash:
            entry = next(m for m in decl["members"] if m["name"] == name)
            entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    if manifest:
        manifest(decl)
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("manifest.json", json.dumps(decl))
        for name, data in {**content, **dict(extra)}.items():
            if name not in drop:
                archive.writestr(name, data)
    return out


def _flip_byte(data: bytes) -> bytes:
    return data[:10] + bytes([data[10] ^ 1]) + data[11:]


def _bad_weights(good):
    with zipfile.ZipFile(good) as archive:
        state = load_safetensors(archive.read("checkpoint_best.safetensors"))
    state.pop(sorted(state)[0])
    return save_safetensors(state)


def _declare(name):
    return lambda m: m["members"].append({"name": name, "size": 2, "sha256": hashlib.sha256(b"{}").hexdigest()})


def _set_size(size):
    return lambda m: next(e for e in m["members"] if e["name"] == "plan.json").update(size=size)


BAD = {
    "unlisted member": (lambda g, o: _rebuild(g, o, extra={"run_me.py": b"print(1)"}), "unknown member run_me.py"),
    "unknown member": (lambda g, o: _rebuild(g, o, extra={"notes.txt": b"{}"}, manifest=_declare("notes.txt")),
                       "unknown member notes.txt"),
    "missing member": (lambda g, o: _rebuild(g, o, drop={"checkpoint_best.safetensors"}),
                       "missing member checkpoint_best.safetensors"),
    "checksum mismatch": (lambda g, o: _rebuild(g, o, members={"plan.json": _flip_byte(zipfile.ZipFile(g).read(
        "plan.json"))}, rehash=False), "checksum mismatch"),
    "parent path": (lambda g, o: _rebuild(g, o, extra={"../escape.json": b"{}"}), "escapes the package folder"),
    "absolute path": (lambda g, o: _rebuild(g, o, extra={"/tmp/escape.json": b"{}"}), "escapes the package folder"),
    "declared path": (lambda g, o: _rebuild(g, o, manifest=_declare("fold_0/../../x.json")), "escapes"),
    "size off": (lambda g, o: _rebuild(g, o, manifest=_set_size(5)), "the manifest 5"),
    "size too big": (lambda g, o: _rebuild(g, o, manifest=_set_size(10**13)), "declares 10000000000000 bytes"),
    "weights misfit": (lambda g, o: _rebuild(g, o, members={"checkpoint_best.safetensors": _bad_weights(g)}),
                       "does not fit the network"),
    "newer format": (lambda g, o: _rebuild(g, o, manifest=lambda m: m.update(format_version=99)),
                     "format version 99 is newer"),
    "truncated zip": (lambda g, o: o.write_bytes(g.read_bytes()[: g.stat().st_size // 2]) and o, "cut-short"),
    "not a zip": (lambda g, o: o.write_bytes(b"not a zip at all") and o, "not a zip file"),
}


def _refused(result, path, problem, *leftovers):
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0] and problem in errors[0], result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    for path in leftovers:
        assert not path.exists(), path


@pytest.mark.parametrize("kind", sorted(BAD))
def test_predict_refuses_a_package_that_is_not_what_it_declares(kind, package, phantoms, tmp_path):
    make, problem = BAD[kind]
    bad = make(package, tmp_path / "bad.zip")
    out = tmp_path / "pred"
    _refused(_run("predict", bad, phantoms / "imagesTr", out), bad, problem, out)


def test_init_from_refuses_a_bad_package_and_leaves_no_run(package, phantoms, tmp_path):
    bad = BAD["checksum mismatch"][0](package, tmp_path / "bad.zip")
    run = tmp_path / "run"
    _refused(_run("train", phantoms, "--out", run, "--init-from", bad, *TINY), bad, "checksum mismatch", run)


def test_unpacked_package_with_a_link_or_stray_file_is_refused(package, phantoms, tmp_path):
    folder = tmp_path / "unpacked"
    with zipfile.ZipFile(package) as archive:
        archive.extractall(folder)
    (folder / "fingerprint.json").unlink()
    (folder / "fingerprint.json").symlink_to(tmp_path / "elsewhere.json")
    _refused(_run("predict", folder, phantoms / "imagesTr", tmp_path / "p"), folder, "is a link", tmp_path / "p")
    (folder / "fingerprint.json").unlink()
    _refused(_run("predict", folder, phantoms / "imagesTr", tmp_path / "p"), folder, "missing member fingerprint.json")


def test_a_bad_package_is_one_line_in_a_subprocess(package, phantoms, tmp_path):
    bad = tmp_path / "model.zip"
    bad.write_bytes(b"PK\x03\x04 cut")
    result = _cli("predict", bad, phantoms / "imagesTr", tmp_path / "pred")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        line for line in result.stderr.splitlines() if str(bad) in line and "not a zip file" in line]
    assert not (tmp_path / "pred").exists()


def _untrained_copy(run, folder):
    """A run folder holding ``run``'s plan and no checkpoint."""
    folder.mkdir()
    (folder / "plan.json").write_bytes((run / "plan.json").read_bytes())
    return folder


EXPORT_REFUSED = {
    "not a run": (lambda run, t: (t, t / "m.zip"), lambda t: t, "not a voxseg run folder"),
    "missing run": (lambda run, t: (t / "nope", t / "m.zip"), lambda t: t / "nope", "run folder not found"),
    "no checkpoint": (lambda run, t: (_untrained_copy(run, t / "r"), t / "m.zip"), lambda t: t / "r",
                      "no such checkpoint"),
    "folds of a single run": (lambda run, t: (run, t / "m.zip", "--folds", "all"), lambda t: None,
                              "--folds was given but the run has no fold_"),
    "missing out folder": (lambda run, t: (run, t / "no" / "m.zip"), lambda t: t / "no", "does not exist"),
    "out folder a file": (lambda run, t: (t.joinpath("f").write_text("x") and run, t / "f" / "m.zip"),
                          lambda t: t / "f", "is a file"),
    "out not .zip": (lambda run, t: (run, t / "m.pkg"), lambda t: t / "m.pkg", "suffix .zip"),
    "out a folder": (lambda run, t: (t.joinpath("m.zip").mkdir() or run, t / "m.zip"), lambda t: t / "m.zip",
                     "is a folder"),
}


@pytest.mark.parametrize("kind", sorted(EXPORT_REFUSED))
def test_export_refuses_in_one_line_and_leaves_nothing(kind, trained, tmp_path):
    args, named, problem = EXPORT_REFUSED[kind]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = args(trained, out_dir)
    before = sorted(out_dir.rglob("*"))
    result = _run("export", *args)
    _refused(result, named(out_dir) or trained, problem)
    assert sorted(out_dir.rglob("*")) == before and not list(trained.glob("*.zip*")), kind


def test_a_package_names_none_of_the_trainers_files(kfold_run, phantoms, tmp_path):
    package = tmp_path / "cv.zip"
    assert _run("export", kfold_run, package).exit_code == 0
    secrets = {str(p) for folder in (kfold_run, phantoms) for p in (folder, folder.resolve(), folder.parent)}
    with zipfile.ZipFile(package) as archive:
        for name in archive.namelist():
            data = archive.read(name)
            assert not [s for s in secrets if s.encode() in data], name
        plans = [json.loads(archive.read(n)) for n in ("plan.json", "fold_0/plan.json", "fold_1/plan.json")]
        card = json.loads(archive.read("model_card.json"))
    assert {p["dataset"] for p in plans} == {phantoms.name}
    assert card["trained_with"][0].startswith(f"voxseg train {phantoms.name} --out {kfold_run.name} --folds 2 ")


def test_export_refuses_a_folder_that_is_not_a_run(tmp_path):
    _refused(_run("export", tmp_path, tmp_path / "m.zip"), tmp_path, "not a voxseg run folder", tmp_path / "m.zip")


@pytest.fixture(scope="module")
def kfold_run(phantoms, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "cv"
    result = _cli("train", phantoms, "--out", run, "--folds", "2", *TINY)
    assert result.returncode == 0, result.stderr
    return run


@pytest.fixture(scope="module")
def swa_run(phantoms, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "swa"
    result = _cli("train", phantoms, "--out", run, *TINY, "--swa-epochs", "1")
    assert result.returncode == 0, result.stderr
    assert (run / "checkpoint_swa.pt").exists()
    return run


def _predict_same(run, package, image, tmp_path, *options):
    """Predict ``image`` from the run folder and from the package with ``options``; assert the same labels."""
    outputs = []
    for name, source in (("run", run), ("package", package)):
        outputs.append(tmp_path / f"{name}{'_'.join(options)}.nii.gz")
        result = _run("predict", source, image, outputs[-1], "--backend", "torch", *options)
        assert result.exit_code == 0, result.output
    assert np.array_equal(_labels(outputs[0]), _labels(outputs[1])), options


def test_kfold_package_predicts_as_the_run_folder(kfold_run, phantoms, tmp_path):
    package = tmp_path / "cv.zip"
    assert _run("export", kfold_run, package, "--folds", "all").exit_code == 0
    with zipfile.ZipFile(package) as archive:
        names = set(archive.namelist())
    assert {"splits.json", "fold_0/checkpoint_best.safetensors", "fold_1/checkpoint_best.safetensors",
            "fold_0/plan.json", "fold_1/split.json"} <= names
    image = phantoms / "imagesTr" / "phantom_002_0000.nii.gz"
    for folds in ("all", "0"):
        _predict_same(kfold_run, package, image, tmp_path, "--folds", folds)
    _predict_same(kfold_run, package, image, tmp_path)  # default: every fold


def test_swa_weights_are_exported_and_predict_as_the_run_folder(swa_run, phantoms, tmp_path):
    package = tmp_path / "swa.zip"
    result = _run("export", swa_run, package, "--checkpoint", "best", "--checkpoint", "swa")
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(package) as archive:
        assert {"checkpoint_best.safetensors", "checkpoint_swa.safetensors"} <= set(archive.namelist())
        card = json.loads(archive.read("model_card.json"))
    assert set(card["models"][0]["checkpoints"]) == {"best", "swa"}
    image = phantoms / "imagesTr" / "phantom_002_0000.nii.gz"
    _predict_same(swa_run, package, image, tmp_path, "--checkpoint", "swa")
