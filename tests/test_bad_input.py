"""Bad input as a user's data breaks, through the CLI in a subprocess: each kind is refused with exit code 2,
error lines that name the file at fault (one line for train / predict / evaluate), no traceback, no numpy
repr in any message, and nothing left behind (no output folder, no partial file).

Each kind below builds its broken input from tiny volumes written with nibabel (no downloads) and returns
the command to run and the path the message must name.
"""
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from voxseg.cli import main
from voxseg.data.phantoms import make_phantom_dataset

TINY = ["--net-args", "base_width=4,depth=3", "--patch", "16x16x16", "--epochs", "1", "--iterations", "2",
        "--threads", "1"]
SHAPE = (8, 9, 10)  # (i, j, k) on disk


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxseg.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def _save(path: Path, data: np.ndarray, affine=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.0, 1.0]) if affine is None else affine), str(path))
    return path


def _image(seed: int = 0, shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 20, shape).astype(np.float32)


def _label(shape=SHAPE) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    out[2:5, 2:5, 2:5] = 1
    return out


def _paired(root: Path, n: int = 2) -> Path:
    """``images/`` + ``labels/`` with ``n`` good cases ``case_0 ...``."""
    for i in range(n):
        _save(root / "images" / f"case_{i}.nii.gz", _image(i))
        _save(root / "labels" / f"case_{i}.nii.gz", _label())
    return root


def _nnunet(root: Path, n: int = 2, channels: int = 4) -> Path:
    """nnU-Net v2 folder with ``channels`` channels, labels 0/1."""
    names = {str(c): f"ch{c}" for c in range(channels)}
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": names, "labels": {"background": 0, "tumour": 1}, "file_ending": ".nii.gz",
        "numTraining": n}))
    for i in range(n):
        for c in range(channels):
            _save(root / "imagesTr" / f"case_{i}_{c:04d}.nii.gz", _image(10 * i + c))
        _save(root / "labelsTr" / f"case_{i}.nii.gz", _label())
    return root


def _header_only(path: Path, header: nib.Nifti1Header, data: np.ndarray) -> Path:
    """Write ``header`` (as given, not made consistent with ``data``) followed by ``data``'s bytes."""
    header = header.copy()
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\0" * 4 + data.tobytes(order="F")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def _with_pixdim(path: Path, pixdim) -> Path:
    """Rewrite ``path`` with voxel sizes ``pixdim`` (i, j, k) in the header, and an sform whose axes are scaled
    by them where they are zero or not finite (a negative pixdim leaves the sform as it is)."""
    img = nib.load(str(path))
    affine = img.affine.copy()
    for axis, size in enumerate(pixdim):
        if not np.isfinite(size) or size == 0:
            affine[:3, axis] *= size
    header = img.header.copy()
    header.set_data_dtype(np.float32)
    header.set_qform(None, code=0)
    header["srow_x"], header["srow_y"], header["srow_z"] = affine[0], affine[1], affine[2]
    header["sform_code"] = 1
    header["pixdim"][1:4] = pixdim
    return _header_only(path, header, np.asarray(img.dataobj, dtype=np.float32))


def _huge(path: Path) -> Path:
    """A header that claims 30000^3 float32 voxels over a few bytes of data."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape((30000, 30000, 30000))
    header.set_qform(np.eye(4), code=1)
    header.set_sform(np.eye(4), code=1)
    return _header_only(path, header, np.zeros(64, np.float32))


def _move(path: Path, mm: float) -> Path:
    img = nib.load(str(path))
    affine = img.affine.copy()
    affine[0, 3] += mm
    return _save(path, np.asarray(img.dataobj), affine)


# ----------------------------------------------------------------------------------------------------------
# Kinds: (tmp_path, run folder) -> (argv, path the message must name, [paths that must not be named])


def _validate_paired(tmp, damage):
    ds = _paired(tmp / "ds")
    target = damage(ds)
    return ["validate", ds], target


def _empty_file(ds):
    target = ds / "images" / "case_0.nii.gz"
    target.write_bytes(b"")
    return target


def _not_gzip(ds):
    target = ds / "images" / "case_0.nii.gz"
    target.write_text("this is a text file, not a scan\n" * 20)
    return target


def _truncated_gzip(ds):
    target = ds / "labels" / "case_1.nii.gz"
    target.write_bytes(target.read_bytes()[:60])
    return target


def _gzip_named_nii(ds):
    target = ds / "images" / "case_0.nii.gz"
    renamed = target.with_name("case_0.nii")
    target.rename(renamed)
    return renamed


def _wrong_extension(ds):
    target = ds / "images" / "case_1.nii.gz"
    target.rename(ds / "images" / "case_1.nrrd")
    return ds / "labels" / "case_1.nii.gz"  # a label without its image


def _two_d(ds):
    return _save(ds / "images" / "case_0.nii.gz", _image()[:, :, 0])


def _five_d(ds):
    return _save(ds / "images" / "case_0.nii.gz", np.zeros(SHAPE + (1, 2), np.float32))


def _label_fraction(ds):
    data = _label().astype(np.float32)
    data[3, 3, 3] = 0.5
    return _save(ds / "labels" / "case_1.nii.gz", data)


def _label_negative(ds):
    data = _label().astype(np.int16)
    data[0, 0, 0] = -1
    return _save(ds / "labels" / "case_1.nii.gz", data)


def _label_nan(ds):
    data = _label().astype(np.float32)
    data[0, 0, 0] = np.nan
    return _save(ds / "labels" / "case_0.nii.gz", data)


def _shape_mismatch(ds):
    return _save(ds / "labels" / "case_0.nii.gz", np.zeros((8, 9, 11), np.uint8))


def _affine_mismatch(ds):
    return _save(ds / "labels" / "case_1.nii.gz", _label(), np.diag([1.0, 1.0, 2.0, 1.0]))


def _nan_voxels(ds):
    data = _image()
    data[1, 2, 3] = np.nan
    return _save(ds / "images" / "case_0.nii.gz", data)


def _inf_voxels(ds):
    data = _image()
    data[1, 2, 3] = np.inf
    return _save(ds / "images" / "case_1.nii.gz", data)


def _all_zero(ds):
    return _save(ds / "images" / "case_0.nii.gz", np.zeros(SHAPE, np.float32))


def _missing_label(ds):
    (ds / "labels" / "case_1.nii.gz").unlink()
    return ds / "images" / "case_1.nii.gz"


def _label_without_image(ds):
    _save(ds / "labels" / "case_9.nii.gz", _label())
    return ds / "labels" / "case_9.nii.gz"


def _duplicate_case(ds):
    _save(ds / "images" / "case_0.nii", _image())
    return ds / "images"  # the folder, with both files named


def _broken_link(ds):
    target = ds / "images" / "case_1.nii.gz"
    target.unlink()
    target.symlink_to(ds / "elsewhere.nii.gz")
    return target


def _garbage_header(ds):
    target = ds / "images" / "case_1.nii"
    (ds / "images" / "case_1.nii.gz").unlink()
    target.write_bytes(bytes(range(256)) * 4)
    return target


def _label_is_directory(ds):
    target = ds / "labels" / "case_0.nii.gz"
    target.unlink()
    target.mkdir()
    return target


def _zero_spacing(ds):
    return _with_pixdim(ds / "images" / "case_1.nii.gz", [1.0, 0.0, 1.0])


def _negative_spacing(ds):
    return _with_pixdim(ds / "images" / "case_0.nii.gz", [1.0, 1.0, -1.0])


def _nan_spacing(ds):
    return _with_pixdim(ds / "labels" / "case_0.nii.gz", [np.nan, 1.0, 1.0])


def _huge_header(ds):
    return _huge(ds / "images" / "case_0.nii.gz")


PAIRED_DAMAGE = {f.__name__[1:]: f for f in [
    _empty_file, _not_gzip, _truncated_gzip, _gzip_named_nii, _wrong_extension, _two_d, _five_d, _label_fraction,
    _label_negative, _label_nan, _shape_mismatch, _affine_mismatch, _nan_voxels, _inf_voxels, _all_zero,
    _missing_label, _label_without_image, _duplicate_case, _broken_link, _garbage_header, _label_is_directory,
    _zero_spacing, _negative_spacing, _nan_spacing, _huge_header,
]}


def _kind_empty_folder(tmp, run):
    (tmp / "ds").mkdir()
    return ["validate", tmp / "ds"], tmp / "ds"


def _kind_missing_folder(tmp, run):
    return ["validate", tmp / "nowhere"], tmp / "nowhere"


def _kind_bad_dataset_json(tmp, run):
    ds = _nnunet(tmp / "ds", n=1, channels=1)
    (ds / "dataset.json").write_text('{"channel_names": {"0": "CT"},')
    return ["validate", ds], ds / "dataset.json"


def _kind_dataset_json_no_channels(tmp, run):
    ds = _nnunet(tmp / "ds", n=1, channels=1)
    (ds / "dataset.json").write_text('{"labels": {"background": 0}, "file_ending": ".nii.gz"}')
    return ["validate", ds], ds / "dataset.json"


def _kind_dataset_json_missing_channel_files(tmp, run):
    ds = _nnunet(tmp / "ds", n=2, channels=2)
    (ds / "dataset.json").write_text(json.dumps({"channel_names": {"0": "a", "1": "b", "2": "c"},
                                                 "labels": {"background": 0, "x": 1}, "file_ending": ".nii.gz"}))
    return ["validate", ds], ds / "imagesTr"


def _kind_channel_count_mismatch(tmp, run):
    ds = _nnunet(tmp / "ds", n=2, channels=2)
    (ds / "imagesTr" / "case_1_0001.nii.gz").unlink()
    return ["validate", ds], ds / "imagesTr"


def _kind_unknown_label_value(tmp, run):
    ds = _nnunet(tmp / "ds", n=2, channels=1)
    data = _label()
    data[0, 0, 0] = 7
    return ["validate", ds], _save(ds / "labelsTr" / "case_1.nii.gz", data)


def _kind_first_channel_moved(tmp, run):
    ds = _nnunet(tmp / "ds", n=1, channels=4)
    moved = _move(ds / "imagesTr" / "case_0_0000.nii.gz", 2.0)
    return ["validate", ds], moved


def _kind_third_channel_moved(tmp, run):
    ds = _nnunet(tmp / "ds", n=1, channels=4)
    moved = _move(ds / "imagesTr" / "case_0_0002.nii.gz", 2.0)
    return ["validate", ds], moved


def _kind_huge_header_train(tmp, run):
    ds = _paired(tmp / "ds", n=3)
    return ["train", ds, "--out", tmp / "run", *TINY], _huge(ds / "labels" / "case_2.nii.gz")


def _kind_zero_spacing_train(tmp, run):
    ds = _paired(tmp / "ds", n=3)
    return ["train", ds, "--out", tmp / "run", *TINY], _zero_spacing(ds)


def _kind_train_out_under_a_file(tmp, run):
    ds = _paired(tmp / "ds", n=3)
    (tmp / "somefile").write_text("a file, not a folder")
    return ["train", ds, "--out", tmp / "somefile" / "run", *TINY], tmp / "somefile"


def _kind_train_negative_time_budget(tmp, run):
    ds = _paired(tmp / "ds", n=3)
    return ["train", ds, "--out", tmp / "run", *TINY, "--time-budget", "-5"], "--time-budget"


def _kind_train_patch_nonsense(tmp, run):
    ds = _paired(tmp / "ds", n=3)
    return ["train", ds, "--out", tmp / "run", *TINY, "--patch", "16xbanana"], "--patch"


def _kind_resume_missing_run(tmp, run):
    ds = _paired(tmp / "ds", n=3)
    return ["train", ds, "--out", tmp / "run", "--resume"], tmp / "run"


def _phantom_input(tmp, run) -> Path:
    """A prediction input folder holding one phantom case (4 channels) of the trained run's data."""
    src = run.parent.parent / "ds" / "imagesTr"
    folder = tmp / "input"
    folder.mkdir()
    for path in sorted(src.glob("phantom_000_*.nii.gz")):
        shutil.copy(path, folder / path.name)
    return folder


def _kind_predict_zero_spacing(tmp, run):
    folder = _phantom_input(tmp, run)
    return ["predict", run, folder, tmp / "out"], _with_pixdim(folder / "phantom_000_0001.nii.gz", [1.0, 1.0, 0.0])


def _kind_predict_huge_header(tmp, run):
    folder = _phantom_input(tmp, run)
    return ["predict", run, folder, tmp / "out"], _huge(folder / "phantom_000_0003.nii.gz")


def _kind_predict_no_nifti(tmp, run):
    (tmp / "input").mkdir()
    (tmp / "input" / "notes.txt").write_text("no scans here")
    return ["predict", run, tmp / "input", tmp / "out"], tmp / "input"


def _kind_predict_missing_channel(tmp, run):
    folder = _phantom_input(tmp, run)
    (folder / "phantom_000_0002.nii.gz").unlink()
    return ["predict", run, folder, tmp / "out"], folder


def _kind_predict_input_missing(tmp, run):
    return ["predict", run, tmp / "nowhere", tmp / "out"], tmp / "nowhere"


def _kind_predict_corrupt_input(tmp, run):
    folder = _phantom_input(tmp, run)
    target = folder / "phantom_000_0000.nii.gz"
    target.write_bytes(target.read_bytes()[:200])
    return ["predict", run, folder, tmp / "out"], target


def _kind_predict_out_under_a_file(tmp, run):
    folder = _phantom_input(tmp, run)
    (tmp / "somefile").write_text("a file, not a folder")
    return ["predict", run, folder, tmp / "somefile" / "out"], tmp / "somefile"


def _kind_predict_run_missing(tmp, run):
    folder = _phantom_input(tmp, run)
    return ["predict", tmp / "no_run", folder, tmp / "out"], tmp / "no_run"


def _copied_run(tmp, run) -> Path:
    copy = tmp / "run"
    shutil.copytree(run, copy)
    return copy


def _kind_run_without_plan(tmp, run):
    copy = _copied_run(tmp, run)
    (copy / "plan.json").unlink()
    return ["predict", copy, _phantom_input(tmp, run), tmp / "out"], copy


def _kind_plan_bad_json(tmp, run):
    copy = _copied_run(tmp, run)
    (copy / "plan.json").write_text((copy / "plan.json").read_text()[:-20])
    return ["predict", copy, _phantom_input(tmp, run), tmp / "out"], copy / "plan.json"


def _kind_plan_unknown_network(tmp, run):
    copy = _copied_run(tmp, run)
    plan = json.loads((copy / "plan.json").read_text())
    plan["network"]["name"] = "no_such_net"
    (copy / "plan.json").write_text(json.dumps(plan))
    return ["predict", copy, _phantom_input(tmp, run), tmp / "out"], copy / "plan.json"


def _evaluation_folders(tmp) -> tuple[Path, Path]:
    pred, gt = tmp / "pred", tmp / "gt"
    for i in range(2):
        _save(pred / f"case_{i}.nii.gz", _label())
        _save(gt / f"case_{i}.nii.gz", _label())
    return pred, gt


def _kind_evaluate_case_mismatch(tmp, run):
    pred, gt = _evaluation_folders(tmp)
    (pred / "case_1.nii.gz").rename(pred / "case_7.nii.gz")
    return ["evaluate", pred, gt], pred


def _kind_evaluate_shape_mismatch(tmp, run):
    pred, gt = _evaluation_folders(tmp)
    return ["evaluate", pred, gt], _save(pred / "case_0.nii.gz", np.zeros((4, 4, 4), np.uint8))


def _kind_evaluate_corrupt_prediction(tmp, run):
    pred, gt = _evaluation_folders(tmp)
    target = pred / "case_1.nii.gz"
    target.write_bytes(target.read_bytes()[:50])
    return ["evaluate", pred, gt], target


def _kind_evaluate_origin_mismatch(tmp, run):
    pred, gt = _evaluation_folders(tmp)
    affine = np.eye(4)
    affine[:3, 3] = [0.5, -2.0, 1.25]
    return ["evaluate", pred, gt], _save(pred / "case_1.nii.gz", _label(), affine)


def _kind_evaluate_missing_reference(tmp, run):
    pred, _ = _evaluation_folders(tmp)
    return ["evaluate", pred, tmp / "nowhere"], tmp / "nowhere"


OTHER_KINDS = {name[len("_kind_"):]: f for name, f in sorted(globals().items()) if name.startswith("_kind_")}
NEEDS_RUN = {name for name in OTHER_KINDS if name.startswith(("predict", "run_", "plan_"))}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run trained on phantoms (one epoch); predict kinds need a model that works."""
    root = tmp_path_factory.mktemp("phantoms")
    ds = make_phantom_dataset(root / "ds", n_cases=4, shape=(20, 24, 20), seed=3)
    run = root / "runs" / "run"
    result = CliRunner().invoke(main, ["train", str(ds), "--out", str(run), *TINY])
    assert result.exit_code == 0, result.output
    (root / "train_output.txt").write_text(result.output)
    return run


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _assert_refused(proc: subprocess.CompletedProcess, named, one_line: bool) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith(("error:", "Error:"))]
    assert errors, proc.stderr
    if one_line:  # one line for the problem (train adds a count of the problems its validation found)
        assert len([e for e in errors if not e.endswith("pass --skip-invalid to leave those cases out")]) == 1, \
            proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == errors[-1], proc.stderr
    assert any(str(named) in line for line in errors), (named, proc.stderr)
    assert not re.search(r"\bnp\.\w+\(", proc.stdout + proc.stderr), proc.stdout + proc.stderr


@pytest.mark.parametrize("kind", sorted(PAIRED_DAMAGE))
def test_validate_refuses_a_broken_file_naming_it(tmp_path, kind):
    argv, target = _validate_paired(tmp_path, PAIRED_DAMAGE[kind])
    before = _tree(tmp_path)
    proc = _cli(*argv)
    _assert_refused(proc, target, one_line=False)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("kind", sorted(OTHER_KINDS))
def test_each_command_refuses_bad_input_in_one_line(tmp_path, kind, request):
    run = request.getfixturevalue("trained") if kind in NEEDS_RUN else None
    argv, named = OTHER_KINDS[kind](tmp_path, run)
    before = _tree(tmp_path)
    run_before = _tree(run) if run is not None else None
    proc = _cli(*argv)
    _assert_refused(proc, named, one_line=argv[0] != "validate")
    assert _tree(tmp_path) == before, "left behind: " + ", ".join(sorted(_tree(tmp_path) - before))
    if run is not None:
        assert _tree(run) == run_before


def test_validate_reports_every_case_past_a_huge_header(tmp_path):
    ds = _paired(tmp_path / "ds", n=3)
    huge = _huge(ds / "images" / "case_0.nii.gz")
    fraction = _label_fraction(ds)  # case_1
    data = _image()
    data[0, 0, 0] = np.nan
    nan = _save(ds / "images" / "case_2.nii.gz", data)
    proc = _cli("validate", ds)
    _assert_refused(proc, huge, one_line=False)
    assert str(nan) in proc.stderr and str(fraction) in proc.stderr
    assert "3 problem(s) in 3 case(s)" in proc.stderr


def test_a_moved_channel_is_named_alone(tmp_path):
    ds = _nnunet(tmp_path / "ds", n=1, channels=4)
    moved = _move(ds / "imagesTr" / "case_0_0000.nii.gz", 2.0)
    proc = _cli("validate", ds)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(moved) in errors[0] and "2.000 mm" in errors[0], proc.stderr


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="runs as root, where a read-only folder does not stop writing")
@pytest.mark.parametrize("command", ["train", "predict"])
def test_an_output_folder_that_cannot_be_written_is_one_line(tmp_path, command, request):
    locked = tmp_path / "locked"
    locked.mkdir()
    if command == "train":
        argv = ["train", _paired(tmp_path / "ds", n=3), "--out", locked / "run", *TINY]
    else:
        run = request.getfixturevalue("trained")
        argv = ["predict", run, _phantom_input(tmp_path, run), locked / "out"]
    locked.chmod(0o555)
    try:
        proc = _cli(*argv)
        _assert_refused(proc, locked, one_line=True)
        assert not list(locked.iterdir())
    finally:
        locked.chmod(0o755)


def test_predict_interrupted_leaves_no_output_folder(trained, tmp_path, monkeypatch):
    import voxseg.infer.predict as predict_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(predict_module, "predict_case", interrupted)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", str(trained), str(_phantom_input(tmp_path, trained)), str(out)])
    assert result.exit_code == 130, result.output
    assert not out.exists()


def test_ctrl_c_during_training_says_how_to_continue(tmp_path, monkeypatch):
    import voxseg.runs.workflow as workflow

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(workflow, "train_run", interrupted)
    ds, run = _paired(tmp_path / "ds", n=3), tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(ds), "--out", str(run), *TINY])
    assert result.exit_code == 130, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"interrupted: {run} keeps what it finished (up to its last epoch); continue with: " \
                   f"voxseg train {ds} --out {run} --resume", result.output
    assert "Traceback" not in result.stderr


def test_training_into_a_log_file_writes_one_line_per_epoch_and_no_bar(trained):
    output = (trained.parent.parent / "train_output.txt").read_text()
    epochs = [line for line in output.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 1 and epochs[0].startswith("epoch 1/1: 2 iterations, loss "), output
    assert "it/s" not in output and "train:" not in output and "\r" not in output
