"""End to end on tiny synthetic phantoms: train a few iterations, predict, evaluate, through the CLI
and the Python API; run-folder contents, geometry of the output, resume and refusals."""
import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from voxseg.cli import main
from voxseg.data.phantoms import make_phantom_dataset
from voxseg.config import RunPlan

TINY = ["--net-args", "base_width=4,depth=3", "--patch", "16x16x16", "--epochs", "2", "--iterations", "2",
        "--threads", "1"]  # a second thread does not speed up a network this small, and slows a busy machine
# For a test that checks what a run holds or says, not how many epochs it logged: half the training.
ONE_EPOCH = [*TINY[:4], "--epochs", "1", *TINY[6:]]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantoms")
    return make_phantom_dataset(root / "ds", n_cases=5, shape=(20, 24, 20), seed=3)


@pytest.fixture(scope="module")
def trained(phantoms, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    result = CliRunner().invoke(main, ["train", str(phantoms), "--out", str(run), *TINY])
    assert result.exit_code == 0, result.output
    return run


def test_run_folder_reproduces_the_run(trained, phantoms):
    for name in ["plan.json", "split.json", "dataset.json", "log.csv", "checkpoint_last.pt", "checkpoint_best.pt",
                 "learning_curves.png", "report.html"]:
        assert (trained / name).exists(), name
    plan = RunPlan.load(trained / "plan.json")
    assert plan.channel_names == ["FLAIR", "T1", "T1ce", "T2"]
    assert plan.label_values == [0, 1, 2, 4]
    assert plan.train.patch_size == [16, 16, 16]
    assert RunPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    split = json.loads((trained / "split.json").read_text())
    assert len(split["val"]) == 1 and len(split["train"]) == 4
    assert not set(split["val"]) & set(split["train"])
    rows = (trained / "log.csv").read_text().splitlines()
    assert len(rows) == 3 and "val_dice_mean" in rows[0]


def test_predict_writes_labels_in_input_geometry_and_evaluate(trained, phantoms, tmp_path):
    out = tmp_path / "pred"
    result = CliRunner().invoke(main, ["predict", str(trained), str(phantoms), str(out), "--probabilities"])
    assert result.exit_code == 0, result.output
    for label_file in sorted((phantoms / "labelsTr").glob("*.nii.gz")):
        pred = nib.load(out / label_file.name)
        ref = nib.load(label_file)
        assert pred.shape == ref.shape
        np.testing.assert_array_equal(pred.affine, ref.affine)
        assert int(pred.header["qform_code"]) == int(ref.header["qform_code"])
        assert int(pred.header["sform_code"]) == int(ref.header["sform_code"])
        assert set(np.unique(np.asanyarray(pred.dataobj))) <= {0, 1, 2, 4}
        prob = nib.load(out / label_file.name.replace(".nii.gz", "_prob.nii.gz"))
        assert prob.shape == ref.shape[:3] + (4,)
        np.testing.assert_allclose(prob.get_fdata().sum(-1), 1.0, atol=1e-4)
    result = CliRunner().invoke(main, ["evaluate", str(out), str(phantoms / "labelsTr"), "--run", str(trained)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "metrics_summary.json").read_text())
    assert summary["summary"]["n_cases"] == 5
    assert set(summary["summary"]["metrics"]) == {"necrosis", "edema", "enhancing"}
    page = (out / "report.html").read_text()  # the evaluation, and the run it evaluates (--run)
    assert 'id="plan"' in page and 'id="evaluation0"' in page and summary["summary"]["cases"]["worst"] in page


def test_predict_single_file_output(trained, phantoms, tmp_path):
    case_dir = phantoms / "imagesTr"
    first = sorted(case_dir.glob("*_0000.nii.gz"))[0]
    out = tmp_path / "one.nii.gz"
    result = CliRunner().invoke(main, ["predict", str(trained), str(first), str(out)])
    assert result.exit_code == 0, result.output
    assert nib.load(out).shape == nib.load(first).shape


def test_resume_continues_from_last_checkpoint(trained, phantoms, tmp_path):
    run = tmp_path / "run"
    import shutil

    shutil.copytree(trained, run)
    plan = RunPlan.load(run / "plan.json")
    plan.train.epochs = 3
    plan.save(run / "plan.json")
    result = CliRunner().invoke(main, ["train", str(phantoms), "--out", str(run), "--resume"])
    assert result.exit_code == 0, result.output
    assert "resumed from epoch 2" in result.output
    assert len((run / "log.csv").read_text().splitlines()) == 4


def test_existing_run_is_not_overwritten(trained, phantoms):
    before = (trained / "checkpoint_last.pt").read_bytes()
    result = CliRunner().invoke(main, ["train", str(phantoms), "--out", str(trained), *TINY])
    assert result.exit_code == 2
    assert "--overwrite" in result.output
    assert (trained / "checkpoint_last.pt").read_bytes() == before


def test_regions_scheme_trains_and_predicts_brats_labels(phantoms, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(phantoms), "--out", str(run), "--label-scheme", "brats", *ONE_EPOCH])
    assert result.exit_code == 0, result.output
    assert RunPlan.load(run / "plan.json").num_outputs == 3
    # validation scores the regions the network predicts (checkpoints are chosen on them)
    header = (run / "log.csv").read_text().splitlines()[0].split(",")
    assert [h for h in header if h.startswith("val_dice_")] == ["val_dice_WT", "val_dice_TC", "val_dice_ET",
                                                                "val_dice_mean"]
    out = tmp_path / "pred"
    assert CliRunner().invoke(main, ["predict", str(run), str(phantoms), str(out)]).exit_code == 0
    pred = np.asanyarray(nib.load(sorted(out.glob("*.nii.gz"))[0]).dataobj)
    assert set(np.unique(pred)) <= {0, 1, 2, 4}


def test_two_dimensional_network_trains_on_slices(phantoms, tmp_path):
    run = tmp_path / "run2d"
    args = ["train", str(phantoms), "--out", str(run), "--dims", "2", "--net-args", "base_width=4,depth=3",
            "--patch", "1x16x16", "--epochs", "1", "--iterations", "2",
            "--threads", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    out = tmp_path / "pred2d"
    assert CliRunner().invoke(main, ["predict", str(run), str(phantoms), str(out)]).exit_code == 0
    assert len(list(out.glob("*.nii.gz"))) == 5


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "voxseg.cli", *map(str, args)], capture_output=True, text=True)


def _invoke_cli(*args):
    """``voxseg ARGS`` in this process (no new interpreter to start), answered like ``_run_cli``: exit code,
    stdout, stderr. An exception that escapes the command, which a user would see as a traceback, is raised."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


@pytest.mark.parametrize("make_bad", ["missing", "label_shape", "nan", "truncated"])
def test_bad_input_gives_one_line_and_exit_2(phantoms, tmp_path, make_bad):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(phantoms, ds)
    target = None
    if make_bad == "missing":
        ds = tmp_path / "does_not_exist"
    elif make_bad == "label_shape":
        target = sorted((ds / "labelsTr").glob("*.nii.gz"))[0]
        img = nib.load(target)
        nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), img.affine), target)
    elif make_bad == "nan":
        target = sorted((ds / "imagesTr").glob("*_0001.nii.gz"))[0]
        img = nib.load(target)
        data = img.get_fdata().astype(np.float32)
        data[0, 0, 0] = np.nan
        nib.save(nib.Nifti1Image(data, img.affine), target)
    else:
        target = sorted((ds / "imagesTr").glob("*_0002.nii.gz"))[0]
        raw = target.read_bytes()
        target.write_bytes(raw[: len(raw) // 2])
    run_cli = _run_cli if make_bad == "truncated" else _invoke_cli  # one true `python -m voxseg.cli` is enough
    for cmd in (["validate", ds], ["train", ds, "--out", tmp_path / "run", *TINY]):
        proc = run_cli(*cmd)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert errors, proc.stderr
        if target is not None:
            assert target.name in errors[0]
        # each problem is said once: not in the table on stdout and again on stderr
        assert target is None or (proc.stdout + proc.stderr).count(target.name) == 1
    assert not (tmp_path / "run").exists()  # validated before the run folder is made


def test_bad_input_with_overwrite_keeps_the_old_run(phantoms, tmp_path):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(phantoms, ds)
    target = sorted((ds / "imagesTr").glob("*_0000.nii.gz"))[0]
    target.write_bytes(target.read_bytes()[:100])
    run = tmp_path / "run"
    run.mkdir()
    (run / "plan.json").write_text("{}")
    (run / "checkpoint_last.pt").write_bytes(b"old weights")
    proc = _run_cli("train", ds, "--out", run, "--overwrite", *TINY)
    assert proc.returncode == 2 and target.name in proc.stderr and "Traceback" not in proc.stderr
    assert (run / "checkpoint_last.pt").read_bytes() == b"old weights"
    proc = _invoke_cli("train", ds, "--out", tmp_path / "cv", "--folds", "2", *TINY)
    assert proc.returncode == 2 and not (tmp_path / "cv").exists()


def test_train_with_folds_evaluates_out_of_fold_and_chooses_postprocessing(phantoms, tmp_path):
    run = tmp_path / "cv"
    result = CliRunner().invoke(main, ["train", str(phantoms), "--out", str(run), "--folds", "2", *TINY])
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "oof" / "metrics_summary.json").read_text())
    assert summary["summary"]["n_cases"] == 5  # every case once, by the fold that did not train on it
    assert "rules" in json.loads((run / "postprocessing.json").read_text())
    assert "out-of-fold evaluation" in result.output and 'id="oof"' in (run / "report.html").read_text()


def test_skip_invalid_leaves_bad_cases_out(phantoms, tmp_path):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(phantoms, ds)
    bad = sorted((ds / "labelsTr").glob("*.nii.gz"))[0]
    bad.unlink()
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(ds), "--out", str(run), "--skip-invalid", *ONE_EPOCH])
    assert result.exit_code == 0, result.output
    assert "left out 1 case" in result.output
    split = json.loads((run / "split.json").read_text())
    assert bad.name.replace(".nii.gz", "") not in split["train"] + split["val"]


def test_two_and_a_half_d_with_a_channel_subset_trains_and_predicts(phantoms, tmp_path):
    run = tmp_path / "run25"
    args = ["train", str(phantoms), "--out", str(run), "--mode", "2.5d", "--slices", "3", "--channels", "flair,t1ce",
            "--net-args", "base_width=4,depth=3", "--patch", "1x16x16", "--epochs", "1", "--iterations", "2",
            "--threads", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    plan = RunPlan.load(run / "plan.json")
    assert plan.train.mode == "2.5d" and plan.input_channels == 6 and plan.network.spatial_dims == 2
    out = tmp_path / "pred25"
    result = CliRunner().invoke(main, ["predict", str(run), str(phantoms), str(out)])
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("*.nii.gz"))) == 5


def test_unknown_channel_subset_is_one_clear_error(phantoms, tmp_path):
    result = CliRunner().invoke(main, ["train", str(phantoms), "--out", str(tmp_path / "r"), "--channels", "dwi",
                                       *TINY])
    assert result.exit_code == 2
    assert "dwi" in result.output and "FLAIR" in result.output


def test_full_augmentation_workers_and_hard_case_flagging(phantoms, tmp_path):
    run = tmp_path / "aug"
    args = ["train", str(phantoms), "--out", str(run), "--augment", "default", "--augment-args", "elastic=0.5",
            "--loader-workers", "1", "--flag-hard-cases", "--patch-overhang", "0.5", *TINY]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    plan = json.loads((run / "plan.json").read_text())
    assert plan["augment"]["elastic"]["p"] == 0.5 and plan["augment"]["gamma"]["p"] > 0
    assert plan["train"]["loader_workers"] == 1 and plan["train"]["patch_overhang"] == 0.5
    flagged = json.loads((run / "flagged_cases.json").read_text())
    assert "flagged" in flagged
    assert len((run / "case_losses.csv").read_text().splitlines()) == 1 + 4  # header + training cases
    rerun = tmp_path / "clean"
    first = sorted((phantoms / "labelsTr").glob("*.nii.gz"))[0].name.replace(".nii.gz", "")
    result = CliRunner().invoke(main, ["train", str(phantoms), "--out", str(rerun), "--exclude-cases", first,
                                       *ONE_EPOCH])
    assert result.exit_code == 0, result.output
    split = json.loads((rerun / "split.json").read_text())
    assert first not in split["train"] + split["val"]


def test_minicube_partition_training_and_slice_selection(phantoms, tmp_path):
    run = tmp_path / "cubes"
    args = ["train", str(phantoms), "--out", str(run), "--minicubes", "8x8x8", "--minicube-context", "8",
            "--net-args", "base_width=4,depth=3", "--epochs", "1", "--iterations", "2",
            "--threads", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "fixed minicubes [8, 8, 8] + 8 voxels of context" in result.output
    assert RunPlan.load(run / "plan.json").train.patch_size == [16, 16, 16]
    assert len(list((run / "preprocessed" / "minicubes").glob("*#cube*.image.npy"))) >= 8  # cached, mapped
    run2d = tmp_path / "sel"
    args = ["train", str(phantoms), "--out", str(run2d), "--dims", "2", "--slice-selection", "1",
            "--net-args", "base_width=4,depth=3", "--patch", "1x16x16", "--epochs", "1", "--iterations", "2",
            "--threads", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert RunPlan.load(run2d / "plan.json").train.slice_selection == 1


def test_demo_runs_the_whole_chain_on_phantoms(tmp_path):
    from voxseg.demo import run_demo
    from voxseg.config import NetworkConfig, TrainConfig, TrainOptions

    options = TrainOptions(network=NetworkConfig(kwargs={"base_width": 4, "depth": 3}),
                           train=TrainConfig(patch_size=[16, 16, 16], epochs=1, iterations_per_epoch=2, num_threads=1))
    lines = []
    summary = run_demo(tmp_path / "demo", n_train=4, n_test=2, options=options, log=lines.append, progress=False)
    assert summary["n_cases"] == 2
    for name in ["overlay.png", "metrics_summary.json", "metrics_per_case.csv", "run/learning_curves.png",
                 "predictions/phantom_000.nii.gz", "report.html"]:
        assert (tmp_path / "demo" / name).exists(), name
    assert any("necrosis" in line for line in lines)
    # Never overwrites a folder it did not create.
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    from voxseg.errors import InputError

    with pytest.raises(InputError, match="--overwrite"):
        run_demo(other, options=options, log=lines.append, progress=False)
    assert (other / "keep.txt").exists()


def test_predict_refuses_an_invalid_input_or_skips_it_when_asked(trained, phantoms, tmp_path):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(phantoms, ds)
    bad = sorted((ds / "imagesTr").glob("*_0001.nii.gz"))[0]
    img = nib.load(bad)
    data = img.get_fdata().astype(np.float32)
    data[1, 1, 1] = np.inf
    nib.save(nib.Nifti1Image(data, img.affine), bad)
    refused = CliRunner().invoke(main, ["predict", str(trained), str(ds), str(tmp_path / "p1")])
    assert refused.exit_code == 2 and bad.name in refused.output
    assert not list((tmp_path / "p1").glob("*.nii.gz")) if (tmp_path / "p1").exists() else True
    skipped = CliRunner().invoke(main, ["predict", str(trained), str(ds), str(tmp_path / "p2"), "--skip-invalid"])
    assert skipped.exit_code == 0, skipped.output
    assert "left out 1 case" in skipped.output
    assert len(list((tmp_path / "p2").glob("*.nii.gz"))) == 4


@pytest.mark.parametrize("damage", ["no_checkpoint", "no_swa", "corrupt", "no_plan"])
def test_predict_from_an_unusable_run_folder_is_one_line(trained, phantoms, tmp_path, damage):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    args = []
    if damage == "no_checkpoint":  # e.g. predicting while the first epoch is still training
        for f in run.glob("checkpoint_*.pt"):
            f.unlink()
    elif damage == "no_swa":
        args = ["--checkpoint", "swa"]  # the run has no SWA model: no silent fallback to another checkpoint
    elif damage == "corrupt":
        best = run / "checkpoint_best.pt"
        best.write_bytes(best.read_bytes()[:100])
    else:
        (run / "plan.json").unlink()
    proc = (_run_cli if damage == "corrupt" else _invoke_cli)("predict", run, phantoms, tmp_path / "out", *args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(run) in lines[0], proc.stderr
    assert not list(tmp_path.glob("out/*.nii.gz"))


def test_init_from_a_folder_without_checkpoint_is_one_line_and_makes_no_run(phantoms, tmp_path):
    (tmp_path / "empty_run").mkdir()
    for source, run_cli in ((tmp_path / "missing", _run_cli), (tmp_path / "empty_run", _invoke_cli)):
        proc = run_cli("train", phantoms, "--out", tmp_path / "run", *TINY, "--init-from", source)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith(f"error: {source}"), proc.stderr
        assert not (tmp_path / "run").exists()


def test_predict_warns_about_a_voxel_size_the_run_never_saw(trained, phantoms, tmp_path):
    import shutil

    from voxseg.data import DatasetFingerprint

    fingerprint = DatasetFingerprint.load(trained)
    assert fingerprint is not None and fingerprint.n_cases == 5
    ds = tmp_path / "ds"
    shutil.copytree(phantoms, ds)
    case_id = sorted(p.name.split(".")[0] for p in (ds / "labelsTr").glob("*.nii.gz"))[0]
    for path in list((ds / "imagesTr").glob(f"{case_id}_*.nii.gz")) + [ds / "labelsTr" / f"{case_id}.nii.gz"]:
        img = nib.load(path)
        affine = img.affine.copy()
        affine[:3, :3] *= 2.0  # the same voxels, twice the voxel size
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine), path)
    proc = _run_cli("predict", trained, ds, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and warned[0].startswith(f"warning: {case_id}: voxel spacing"), proc.stderr
    assert "does not resample" in warned[0]
    assert len(list((tmp_path / "out").glob("*.nii.gz"))) == 5


def test_predict_output_that_is_a_file_is_one_line_and_a_new_file_folder_is_made(trained, phantoms, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    proc = _run_cli("predict", trained, phantoms, taken)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {taken}: output exists and is not a folder")
    first = sorted((phantoms / "imagesTr").glob("*_0000.nii.gz"))[0]
    single = tmp_path / "new" / "deeper" / "one.nii.gz"
    result = CliRunner().invoke(main, ["predict", str(trained), str(first), str(single)])
    assert result.exit_code == 0, result.output
    assert nib.load(single).shape == nib.load(first).shape


def test_train_and_evaluate_refuse_an_output_that_is_a_file(phantoms, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    for run_cli, args in ((_invoke_cli, ["train", phantoms, "--out", taken, *TINY]),
                          (_run_cli, ["evaluate", phantoms / "labelsTr", phantoms / "labelsTr", "--out", taken])):
        proc = run_cli(*args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {taken}:"), proc.stderr
    assert taken.read_text() == "not a folder"


@pytest.mark.parametrize("bad", [
    ["--net", "unett"], ["--net-args", "bogus=1"], ["--net-args", "depth=30"], ["--loss", "bogus"],
    ["--patch", "3x3x3"], ["--patch", "abc"], ["--iterations", "0"], ["--mode", "2.5d", "--slices", "2"],
    ["--folds", "2", "--fold", "7"], ["--exclude-cases", "no_such_case"], ["--augment-args", "bogus=1"],
    ["--spacing", "0,1,1"], ["--optimizer-args", "bogus=1"], ["--fold", "1"], ["--channels", "FLAIR,flair"],
])
def test_a_bad_option_is_one_line_and_leaves_the_old_run_whole(trained, phantoms, tmp_path, bad):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = sorted(p.name for p in run.iterdir())
    run_cli = _run_cli if bad == ["--net", "unett"] else _invoke_cli  # one true `python -m voxseg.cli` is enough
    proc = run_cli("train", phantoms, "--out", run, "--overwrite", *TINY, *bad)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(("error: ", "Error: Invalid value")), proc.stderr
    assert sorted(p.name for p in run.iterdir()) == before  # --overwrite deleted nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no half-made or staging folder
    fresh = run_cli("train", phantoms, "--out", tmp_path / "new", *TINY, *bad)
    assert fresh.returncode == 2 and not (tmp_path / "new").exists()


def test_predict_refuses_to_write_over_its_input(trained, phantoms, tmp_path):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(phantoms, ds)
    before = {p: p.read_bytes() for p in ds.rglob("*.nii.gz")}
    first = sorted((ds / "imagesTr").glob("*_0000.nii.gz"))[0]
    second_channel = first.with_name(first.name.replace("_0000", "_0001"))
    for out in (ds / "labelsTr", ds / "preds", first, second_channel):
        source = first if out in (first, second_channel) else ds
        proc = (_run_cli if out == ds / "labelsTr" else _invoke_cli)("predict", trained, source, out)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(f"error: {out}:"), proc.stderr
    assert {p: p.read_bytes() for p in ds.rglob("*.nii.gz")} == before


def test_resume_says_which_options_it_ignores(trained, phantoms, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    proc = _run_cli("train", phantoms, "--out", run, "--resume", "--epochs", "3", "--loss", "dice")
    assert proc.returncode == 0, proc.stderr[-2000:]
    warned = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert any("ignored: --epochs, --loss" in line for line in warned), proc.stderr


def test_training_data_without_any_foreground_is_refused(phantoms, tmp_path):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(phantoms, ds)
    for path in (ds / "labelsTr").glob("*.nii.gz"):
        img = nib.load(path)
        nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), path)
    proc = _invoke_cli("train", ds, "--out", tmp_path / "run", *TINY)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (f"error: {ds}: the label maps of all 5 case(s) hold only "
                                                    "background (0): nothing to learn")
    assert not (tmp_path / "run").exists()
    proc = _invoke_cli("validate", ds)
    assert proc.returncode == 0 and "warning: the label maps of all 5 case(s) hold only background (0)" in proc.stderr


def _as_nnunet_region_dataset(phantoms, root):
    """The phantoms as nnU-Net v2 stores BraTS: labels 1 oedema, 2 non-enhancing core, 3 enhancing, and
    dataset.json regions (whole tumor, tumor core, enhancing tumor) with regions_class_order."""
    import shutil

    shutil.copytree(phantoms, root)
    remap = {0: 0, 2: 1, 1: 2, 4: 3}
    for path in (root / "labelsTr").glob("*.nii.gz"):
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
        nib.save(nib.Nifti1Image(np.vectorize(remap.get)(data).astype(np.uint8), img.affine), path)
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3}
    meta["regions_class_order"] = [1, 2, 3]
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_nnunet_region_dataset_trains_regions_and_predicts_its_labels(phantoms, tmp_path):
    ds = _as_nnunet_region_dataset(phantoms, tmp_path / "ds")
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(ds), "--out", str(run), *ONE_EPOCH])
    assert result.exit_code == 0, result.output
    assert "labels: the regions of dataset.json" in result.output
    plan = RunPlan.load(run / "plan.json")
    assert plan.label_scheme == "regions" and plan.num_outputs == 3 and plan.activation == "sigmoid"
    assert list(plan.label_regions) == ["whole tumor", "tumor core", "enhancing tumor"]
    out = tmp_path / "pred"
    assert CliRunner().invoke(main, ["predict", str(run), str(ds), str(out)]).exit_code == 0
    preds = sorted(out.glob("*.nii.gz"))
    assert preds and all(set(np.unique(np.asanyarray(nib.load(p).dataobj))) <= {0, 1, 2, 3} for p in preds)
    # evaluate scores the regions, from the run or from the dataset.json beside labelsTr/
    for extra in (["--run", str(run)], []):
        result = CliRunner().invoke(main, ["evaluate", str(out), str(ds / "labelsTr"), *extra,
                                           "--out", str(tmp_path / "eval")])
        assert result.exit_code == 0, result.output
        metrics = json.loads((tmp_path / "eval" / "metrics_summary.json").read_text())
        assert set(metrics["summary"]["metrics"]) == {"whole tumor", "tumor core", "enhancing tumor"}, extra
    result = CliRunner().invoke(main, ["evaluate", str(out), str(ds / "labelsTr"), "--label-scheme", "classes",
                                       "--out", str(tmp_path / "eval")])
    metrics = json.loads((tmp_path / "eval" / "metrics_summary.json").read_text())
    assert set(metrics["summary"]["metrics"]) == {"label_1", "label_2", "enhancing tumor"}
    # the same data trained as classes when asked
    result = CliRunner().invoke(main, ["train", str(ds), "--out", str(tmp_path / "c"), "--label-scheme", "classes",
                                       *ONE_EPOCH])
    assert result.exit_code == 0 and RunPlan.load(tmp_path / "c" / "plan.json").num_outputs == 4


def test_regions_scheme_without_regions_is_one_line(phantoms, tmp_path):
    proc = _invoke_cli("train", phantoms, "--out", tmp_path / "run", "--label-scheme", "regions", *TINY)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {phantoms / 'dataset.json'}: --label-scheme "
                                                            "regions takes its regions from an nnU-Net dataset.json")
    assert not (tmp_path / "run").exists()


def _store_as(src, dst, code):
    """Write the NIfTI ``src`` to ``dst`` with its voxels in orientation ``code`` (same scan, same world)."""
    img = nib.load(src)
    ornt = nib.orientations.ornt_transform(nib.io_orientation(img.affine), nib.orientations.axcodes2ornt(tuple(code)))
    nib.save(img.as_reoriented(ornt), dst)


def test_a_scan_stored_in_another_voxel_order_gets_the_same_segmentation(trained, phantoms, tmp_path):
    from voxseg.io import orientation_code

    plan = RunPlan.load(trained / "plan.json")
    native = orientation_code(nib.load(next((phantoms / "imagesTr").glob("*_0000.nii.gz"))).affine)
    assert plan.preprocess.orientation == native  # "auto": the order the training cases are stored in
    case = "phantom_001"
    other = "PSR" if native != "PSR" else "RAS"
    flipped = tmp_path / "flipped"
    flipped.mkdir()
    for src in sorted((phantoms / "imagesTr").glob(f"{case}_*.nii.gz")):
        _store_as(src, flipped / src.name, other)
    outs = {}
    for name, folder in (("native", phantoms / "imagesTr"), ("flipped", flipped)):
        outs[name] = tmp_path / f"pred_{name}"
        result = CliRunner().invoke(main, ["predict", str(trained), str(folder), str(outs[name])])
        assert result.exit_code == 0, result.output
    native_pred = nib.load(outs["native"] / f"{case}.nii.gz")
    flipped_pred = nib.load(outs["flipped"] / f"{case}.nii.gz")
    # Written in the flipped file's own geometry, and the same labels at the same places in the world.
    np.testing.assert_allclose(flipped_pred.affine, nib.load(flipped / f"{case}_0000.nii.gz").affine)
    assert orientation_code(flipped_pred.affine) == other
    back = nib.as_closest_canonical(flipped_pred)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), np.asanyarray(nib.as_closest_canonical(native_pred).dataobj))
    assert np.count_nonzero(np.asanyarray(native_pred.dataobj)) > 0


def test_training_cases_stored_in_another_voxel_order_are_named_and_brought_to_the_majority(phantoms, tmp_path):
    from voxseg.io import orientation_code

    mixed = tmp_path / "mixed"
    shutil.copytree(phantoms, mixed)
    native = orientation_code(nib.load(next((mixed / "imagesTr").glob("*_0000.nii.gz"))).affine)
    other = "PSR" if native != "PSR" else "RAS"  # permutes the axes: (Z, Y, X) shape and spacing change places
    for case in ("phantom_000", "phantom_003"):
        for src in [*(mixed / "imagesTr").glob(f"{case}_*.nii.gz"), mixed / "labelsTr" / f"{case}.nii.gz"]:
            _store_as(src, src, other)
    checked = CliRunner().invoke(main, ["validate", str(mixed)])
    assert checked.exit_code == 0
    assert (f"note: the cases are stored in 2 voxel orders, {native} for 3 of them, others {other}: phantom_000, "
            f"phantom_003;") in checked.output
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(mixed), "--out", str(run), *ONE_EPOCH])
    assert result.exit_code == 0, result.output
    assert (f"orientation: 2 of 5 cases are stored in another voxel order than {native}: phantom_000 ({other}), "
            f"phantom_003 ({other})") in result.output
    assert RunPlan.load(run / "plan.json").preprocess.orientation == native
    same = json.loads((tmp_path / "run" / "fingerprint.json").read_text())
    assert nib.load(mixed / "labelsTr" / "phantom_000.nii.gz").shape != nib.load(mixed / "labelsTr" / "phantom_001.nii.gz").shape
    # One shape and one spacing once every case is in the run's voxel order (their headers disagree).
    assert same["shape_min"] == same["shape_max"] and same["spacing_min"] == same["spacing_max"]
    kept = CliRunner().invoke(main, ["train", str(mixed), "--out", str(tmp_path / "kept"), "--orientation", "none",
                                     *ONE_EPOCH])
    assert kept.exit_code == 0 and "orientation:" not in kept.output
    assert RunPlan.load(tmp_path / "kept" / "plan.json").preprocess.orientation is None
    bad = CliRunner().invoke(main, ["train", str(mixed), "--out", str(tmp_path / "bad"), "--orientation", "RAR"])
    assert bad.exit_code == 2 and "one of each of L/R, P/A, I/S" in bad.output
    assert not (tmp_path / "bad").exists()


def _ct_dataset(root, n_cases=4):
    """nnU-Net layout, one channel named CT: air -1000 HU, body 0-60 HU, a 'liver' (label 1) near 60 HU and
    bone at 700 HU."""
    rng = np.random.default_rng(7)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    shape = (20, 24, 20)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    for k in range(n_cases):
        body = ((zz - 10) ** 2 / 81 + (yy - 12) ** 2 / 100 + (xx - 10) ** 2 / 81) < 1
        liver = ((zz - 10) ** 2 + (yy - 10 - k % 2) ** 2 + (xx - 8) ** 2) < 16
        image = np.full(shape, -1000.0) + body * (1000 + rng.normal(20, 10, shape)) + liver * 40
        image[body & (xx > 15)] = 700
        for array, folder, name in ((image.astype(np.int16), "imagesTr", f"ct_{k:03d}_0000"),
                                    (liver.astype(np.uint8), "labelsTr", f"ct_{k:03d}")):
            nib.save(nib.Nifti1Image(array.transpose(2, 1, 0), np.diag([1.5, 1.5, 2.0, 1.0])),
                     root / folder / f"{name}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1},
                                                   "numTraining": n_cases, "file_ending": ".nii.gz"}))
    return root


def test_ct_datasets_are_normalised_with_their_foreground_statistics(tmp_path):
    from voxseg.data.preprocess import foreground_intensity_statistics
    from voxseg.io import load_dataset, read_case

    data = _ct_dataset(tmp_path / "ct")
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(data), "--out", str(run), *ONE_EPOCH])
    assert result.exit_code == 0, result.output
    pre = RunPlan.load(run / "plan.json").preprocess
    assert pre.normalization == "ct" and "CT normalisation: clip to" in result.output
    pairs = [read_case(c, with_label=True)[:2] for c in load_dataset(data).cases]
    stats = foreground_intensity_statistics(pairs, seed=0)
    assert pre.ct_window == pytest.approx((stats["p00_5"], stats["p99_5"]), abs=0.01)
    assert 20 < pre.ct_window[0] < pre.ct_mean < pre.ct_window[1] < 120  # the liver (60 +- 10 HU), not air or bone
    # The cached network input is (clip(HU) - mean) / std, with the dataset's numbers.
    image, _, _ = read_case(load_dataset(data).cases[0], with_label=True)
    cached = np.load(next((run / "preprocessed").glob("ct_000*.image.npy")))
    lo, hi = pre.ct_window
    expected = (np.clip(image[0].astype(np.float64), lo, hi) - pre.ct_mean) / pre.ct_std
    assert cached.shape[1:] == expected.shape  # (all voxels nonzero: -1000 HU is not 0, nothing is cropped)
    np.testing.assert_allclose(cached[0], expected, atol=1e-4)
    out = tmp_path / "pred"
    assert CliRunner().invoke(main, ["predict", str(run), str(data / "imagesTr"), str(out)]).exit_code == 0
    zscore = CliRunner().invoke(main, ["train", str(data), "--out", str(tmp_path / "z"), "--normalization", "zscore",
                                       *ONE_EPOCH])
    assert zscore.exit_code == 0 and RunPlan.load(tmp_path / "z" / "plan.json").preprocess.normalization == "zscore"
    window = CliRunner().invoke(main, ["train", str(data), "--out", str(tmp_path / "w"), "--ct-window", "-100,200",
                                       *ONE_EPOCH])
    assert window.exit_code == 0, window.output
    assert RunPlan.load(tmp_path / "w" / "plan.json").preprocess.ct_window == (-100.0, 200.0)
    bad = CliRunner().invoke(main, ["train", str(data), "--out", str(tmp_path / "b"), "--ct-window", "200,-100"])
    assert bad.exit_code == 2 and "LO < HI" in bad.output and not (tmp_path / "b").exists()
    # Through the Python API, a normalisation other than the default is kept on a CT dataset.
    from voxseg.data.preprocess import PreprocessConfig
    from voxseg.config import NetworkConfig, TrainConfig, TrainOptions
    from voxseg.runs import run_training

    options = TrainOptions(preprocess=PreprocessConfig("percentile"), network=NetworkConfig(kwargs={"base_width": 4, "depth": 3}),
                           train=TrainConfig(epochs=1, iterations_per_epoch=1, patch_size=[16, 16, 16], num_threads=1))
    run_training(data, tmp_path / "api", options, progress=False)
    assert RunPlan.load(tmp_path / "api" / "plan.json").preprocess.normalization == "percentile"
    # Labelled voxels of one value leave nothing to normalise with: one line, no run.
    flat = tmp_path / "flat"
    shutil.copytree(data, flat)
    for path in (flat / "imagesTr").glob("*.nii.gz"):
        img, lab = nib.load(path), nib.load(flat / "labelsTr" / path.name.replace("_0000", ""))
        image = np.asanyarray(img.dataobj).copy()
        image[np.asanyarray(lab.dataobj) > 0] = 60
        nib.save(nib.Nifti1Image(image, img.affine, img.header), path)
    result = CliRunner().invoke(main, ["train", str(flat), "--out", str(tmp_path / "f"), *ONE_EPOCH])
    assert result.exit_code == 2 and "all hold (nearly) one value, 60" in result.output
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("args, message", [
    (["--patch", "16x16"], "Invalid value for '--patch': a 3-D network needs 3 sizes (Z x Y x X), got 16x16"),
    (["--dims", "2", "--patch", "16x16x16"], "Invalid value for '--patch': a 2-D network takes a slice, Y x X"),
    (["--ct-window", "-100,100", "--normalization", "zscore"], "goes with --normalization ct, not zscore"),
    (["--net-args", "depth=abc"], "has the wrong type or name: numbers are written as numbers"),
    (["--net-args", "norm=foo"], "norm='foo' is not supported; choose one of 'instance', 'batch', 'group'"),
    (["--net-args", "depth=5", "--patch", "16x16x16"], "leaves the deepest stage of the network (which downsamples "
                                                       "16x16x16) a single voxel"),
    (["--freeze-stages", "10"], "--freeze-stages 10: n_stages must be between 0 and"),
    (["--patch", "16xax16"], "Invalid value for '--patch': expected positive integers such as 64x64x64"),
    (["--ct-window", "a,b"], "Invalid value for '--ct-window': expected LO,HI with LO < HI"),
    (["--resume", "", "--overwrite", ""], "--resume continues the run in --out, --overwrite replaces it"),
    (["--resume", ""], "nothing to resume: run folder not found"),
])
def test_options_that_cannot_train_are_one_line_naming_the_option(phantoms, tmp_path, args, message):
    base = {"--net-args": "base_width=4,depth=3", "--patch": "16x16x16", "--epochs": "1", "--iterations": "1",
            "--threads": "1"}
    given = dict(zip(args[::2], args[1::2]))
    flags = [item for key, value in {**base, **given}.items() for item in (key, value) if item]  # "" = a flag
    result = CliRunner().invoke(main, ["train", str(phantoms), "--out", str(tmp_path / "run"), *flags])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "run").exists() and not (tmp_path / ".run.new").exists()


def test_a_diverging_run_stops_with_one_line_saying_so(phantoms, tmp_path):
    result = CliRunner().invoke(main, ["train", str(phantoms), "--out", str(tmp_path / "run"), "--lr", "1e9",
                                       "--net-args", "base_width=4,depth=3", "--patch", "16x16x16", "--epochs", "2",
                                       "--iterations", "15", "--threads", "1"])
    assert result.exit_code == 2
    line = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "training diverged: the loss was not a number for 10 iterations in a row" in line[0]
    assert "lower --lr" in line[0]


def test_a_region_no_case_holds_is_warned_about(phantoms, tmp_path):
    no_enhancing = tmp_path / "ds"
    shutil.copytree(phantoms, no_enhancing)
    for path in (no_enhancing / "labelsTr").glob("*.nii.gz"):
        img = nib.load(path)
        label = np.asanyarray(img.dataobj).copy()
        label[label == 4] = 1
        nib.save(nib.Nifti1Image(label, img.affine, img.header), path)
    result = CliRunner().invoke(main, ["train", str(no_enhancing), "--out", str(tmp_path / "run"), "--label-scheme",
                                       "brats", *ONE_EPOCH])
    assert result.exit_code == 0, result.output
    assert (f"warning: ET (label 4) occurs in none of the 5 case(s) of {no_enhancing}; check --label-scheme (brats: "
            "WT = [1, 2, 4]; TC = [1, 4]; ET = [4]): the network learns it never appears") in result.output
    assert result.output.count("warning:") == 1  # one problem, one line
    # Classes: the label dataset.json names that no case holds.
    result = CliRunner().invoke(main, ["train", str(no_enhancing), "--out", str(tmp_path / "run1"), *ONE_EPOCH])
    assert result.exit_code == 0, result.output
    assert (f"warning: label 4 (enhancing) occurs in none of the 5 case(s) of {no_enhancing} (dataset.json names it)"
            in result.output)
    # Without a dataset.json (label values from the cases), the region scheme says which region is missing.
    paired = tmp_path / "paired"
    for sub in ("images", "labels"):
        (paired / sub).mkdir(parents=True)
    for path in sorted((no_enhancing / "labelsTr").glob("*.nii.gz")):
        shutil.copy(path, paired / "labels" / path.name)
        shutil.copy(no_enhancing / "imagesTr" / path.name.replace(".nii.gz", "_0000.nii.gz"), paired / "images" / path.name)
    result = CliRunner().invoke(main, ["train", str(paired), "--out", str(tmp_path / "run2"), "--label-scheme",
                                       "brats", *ONE_EPOCH])
    assert result.exit_code == 0, result.output
    assert f"warning: ET (label 4) occurs in none of the 5 case(s) of {paired}; check --label-scheme" in result.output


def test_a_run_without_its_best_checkpoint_says_which_it_predicts_with(trained, phantoms, tmp_path):
    import warnings as _warnings

    from voxseg.infer import checkpoint_path

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "checkpoint_best.pt").unlink()
    with pytest.warns(UserWarning, match="no checkpoint_best.pt .*: using checkpoint_last.pt"):
        assert checkpoint_path(run) == run / "checkpoint_last.pt"
    with _warnings.catch_warnings():
        _warnings.simplefilter("error")
        assert checkpoint_path(trained) == trained / "checkpoint_best.pt"


def test_plan_only_writes_the_plan_and_resume_trains_it_as_edited(phantoms, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(phantoms), "--out", str(run), "--plan-only", *TINY])
    assert result.exit_code == 0, result.output
    assert "planned, not trained" in result.output and "--resume" in result.output
    assert {"plan.json", "split.json", "dataset.json"} <= {p.name for p in run.iterdir()}
    assert not (run / "checkpoint_last.pt").exists() and not (run / "log.csv").exists()
    plan = RunPlan.load(run / "plan.json")
    assert plan.train.patch_size == [16, 16, 16]
    plan.train.epochs, plan.train.iterations_per_epoch = 1, 3  # the user's edit
    plan.save(run / "plan.json")
    result = CliRunner().invoke(main, ["train", str(phantoms), "--out", str(run), "--resume"])
    assert result.exit_code == 0, result.output
    assert "starting the planned run" in result.output and "1 epochs x 3 iterations" in result.output
    assert len((run / "log.csv").read_text().splitlines()) == 2  # header + the one edited epoch
    assert (run / "checkpoint_last.pt").exists()


def test_plan_only_refusals_and_a_broken_edit_are_one_line(phantoms, tmp_path):
    run = tmp_path / "run"
    proc = _run_cli("train", phantoms, "--out", run, "--plan-only", "--resume")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--plan-only" in proc.stderr
    assert not run.exists()
    assert _invoke_cli("train", phantoms, "--out", run, "--plan-only", *TINY).returncode == 0
    plan_path = run / "plan.json"
    text = plan_path.read_text()
    for broken, problem in [(text.replace('"patch_size": [\n      16', '"patch_size": [\n      15'),
                             "is not a multiple of 4"),
                            (text.replace('"epochs"', '"epoch"'), "unexpected keyword argument 'epoch'"),
                            (text.replace('"epochs": 2', '"epochs": "2"'), 'train.epochs must be int, got "2"'),
                            (text.replace('"minicube": null', '"minicube": [8, 8]'), "--minicubes must be 3 sizes"),
                            (text[:-5], "not valid JSON")]:
        assert broken != text
        plan_path.write_text(broken)
        proc = _invoke_cli("train", phantoms, "--out", run, "--resume")
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert last.startswith(f"error: {plan_path}:") and problem in last, last
        assert not (run / "checkpoint_last.pt").exists()
    plan_path.write_text(text)
    split_path = run / "split.json"
    split_path.write_text('{"train": ["case_000"]}')
    proc = _invoke_cli("train", phantoms, "--out", run, "--resume")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        f'error: {split_path}: must hold {{"train": [case ids], "val": [case ids]}}'), proc.stderr[-2000:]


def test_resume_does_not_restart_a_trained_run_whose_last_checkpoint_is_gone(trained, phantoms, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "checkpoint_last.pt").unlink()
    before = (run / "log.csv").read_text()
    proc = _invoke_cli("train", phantoms, "--out", run, "--resume")
    assert proc.returncode == 2 and "nothing to resume: no checkpoint_last.pt" in proc.stderr.strip().splitlines()[-1]
    assert (run / "log.csv").read_text() == before


def test_plan_only_with_folds_then_the_folds_train(phantoms, tmp_path):
    run = tmp_path / "cv"
    result = CliRunner().invoke(main, ["train", str(phantoms), "--out", str(run), "--folds", "2", "--plan-only",
                                       *TINY])
    assert result.exit_code == 0, result.output
    assert (run / "splits.json").exists() and not list(run.glob("fold_*"))
    assert f"--out {run} --folds 2'" in result.output
    proc = _run_cli("train", phantoms, "--out", run, "--folds", "2", "--fold", "0", "--epochs", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    warned = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert any("the cross-validation continues as its plan.json says; ignored: --epochs (" in line
               for line in warned), warned
    assert len((run / "fold_0" / "log.csv").read_text().splitlines()) == 3  # header + the plan's 2 epochs
    assert (run / "fold_0" / "checkpoint_last.pt").exists() and not (run / "fold_1").exists()
    before = (run / "fold_0" / "checkpoint_last.pt").read_bytes()
    proc = _invoke_cli("train", phantoms, "--out", run, "--folds", "2", "--plan-only", *TINY)  # would retrain fold 0
    assert proc.returncode == 2 and "holds a cross-validation already" in proc.stderr.strip().splitlines()[-1]
    assert (run / "fold_0" / "checkpoint_last.pt").read_bytes() == before


def test_label_names_name_the_structures_and_evaluate_marks_the_trained_cases(phantoms, tmp_path):
    run, out = tmp_path / "run", tmp_path / "pred"
    result = CliRunner().invoke(main, ["train", str(phantoms), "--out", str(run), "--label-names", "core,ring,dot",
                                       *ONE_EPOCH])
    assert result.exit_code == 0, result.output
    assert RunPlan.load(run / "plan.json").label_names == {"1": "core", "2": "ring", "4": "dot"}
    assert "val_dice_core" in (run / "log.csv").read_text().splitlines()[0]
    assert CliRunner().invoke(main, ["predict", str(run), str(phantoms), str(out)]).exit_code == 0
    proc = _invoke_cli("evaluate", out, phantoms / "labelsTr", "--run", run)
    assert proc.returncode == 0, proc.stderr
    split = json.loads((run / "split.json").read_text())
    summary = json.loads((out / "metrics_summary.json").read_text())["summary"]
    assert set(summary["metrics"]) == {"core", "ring", "dot"}
    assert summary["case_splits"] == {**{c: "training" for c in split["train"]}, **{c: "validation" for c in split["val"]}}
    assert summary["by_split"]["held_out"]["n_cases"] == len(split["val"])
    assert summary["by_split"]["training"]["n_cases"] == len(split["train"])
    rows = (out / "metrics_per_case.csv").read_text().splitlines()
    assert rows[0].startswith("case_id,split,structure") and f"{split['val'][0]},validation,core" in "\n".join(rows)
    assert "held-out cases" in proc.stdout and "cases the run trained on" in proc.stdout
    warning = [line for line in proc.stderr.splitlines() if "training split" in line]
    assert len(warning) == 1 and f"{len(split['train'])} of the 5 evaluated cases" in warning[0]
    page = (out / "report.html").read_text()
    assert f"Held-out cases (validation and never seen): {len(split['val'])}" in page and "optimistic" in page


def test_label_names_from_a_file_and_a_wrong_count_is_one_line(phantoms, tmp_path):
    names = tmp_path / "labels.json"
    names.write_text(json.dumps({"1": "core", "2": "ring", "4": "dot"}))
    lines = tmp_path / "labels.txt"
    lines.write_text("core\nring\n\ndot\n")
    for given in (names, lines):
        run = tmp_path / f"run_{given.suffix[1:]}"
        proc = _invoke_cli("train", phantoms, "--out", run, "--plan-only", "--label-names", given, *TINY)
        assert proc.returncode == 0, proc.stderr
        assert RunPlan.load(run / "plan.json").label_names == {"1": "core", "2": "ring", "4": "dot"}
    proc = _invoke_cli("train", phantoms, "--out", tmp_path / "bad", "--plan-only", "--label-names", "CSF,GM", *TINY)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith("2 name(s) (CSF, GM) for 3 foreground label value(s) "
                                                         "(1, 2, 4): give one name per value, in order")
    assert not (tmp_path / "bad").exists()
