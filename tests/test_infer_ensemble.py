"""Ensembles (folds, runs with different preprocessing), Henry et al.'s (2021) merge table, and the predict CLI."""
import copy
import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from voxseg.cli import main
from voxseg.data.phantoms import make_phantom_dataset
from voxseg.data.preprocess import PreprocessConfig
from voxseg.errors import InputError
from voxseg.infer.ensemble import EnsembleMember, count_windows, ensemble_predict, member_dirs, predict_groups, prepare_groups
from voxseg.infer.merge import MERGE_TABLES, MergeRule, MergeTable, load_merge_table
from voxseg.nets import build_model
from voxseg.config import NetworkConfig, RunPlan, TrainConfig

# Henry et al. (2021), Table 1, as printed: rows = model B's label, columns = model A's label (0, 1, 2, 4).
TABLE_1 = {0: [0, 1, 0, 4], 1: [0, 1, 2, 4], 2: [2, 1, 2, 4], 4: [0, 1, 2, 4]}


def _member(normalization="zscore", scheme="classes", labels=(0, 1, 2), seed=0):
    plan = RunPlan(channel_names=["a", "b"], label_values=list(labels), label_scheme=scheme,
                   preprocess=PreprocessConfig(normalization=normalization),
                   network=NetworkConfig("unet", 3, {"base_width": 4, "depth": 3}),
                   train=TrainConfig(patch_size=[8, 8, 16], amp="none"))
    torch.manual_seed(seed)
    return EnsembleMember(build_model(plan).eval(), plan)


def _image():
    image = np.zeros((2, 12, 14, 22), np.float32)
    image[:, 2:11, 1:13, 3:20] = np.random.default_rng(1).normal(5, 2, size=(2, 9, 12, 17))
    return image


SPACING = (1.5, 1.0, 1.0)


def test_ensemble_of_identical_members_equals_one_member():
    m = _member()
    one = ensemble_predict([m], _image(), SPACING)
    two = ensemble_predict([m, copy.deepcopy(m)], _image(), SPACING)
    assert one.probabilities.shape == (3, 12, 14, 22) and two.count == 2
    np.testing.assert_allclose(two.probabilities, one.probabilities, atol=1e-6)


def test_members_with_different_preprocessing_are_averaged_in_the_original_grid():
    a, b = _member("zscore"), _member("percentile", seed=1)
    both = ensemble_predict([a, b], _image(), SPACING, uncertainty=True)
    mean = (ensemble_predict([a], _image(), SPACING).probabilities
            + ensemble_predict([b], _image(), SPACING).probabilities) / 2
    np.testing.assert_allclose(both.probabilities, mean, atol=1e-6)
    np.testing.assert_allclose(both.probabilities.sum(0), 1.0, atol=1e-5)
    mi = both.uncertainty()
    assert mi.shape == (12, 14, 22) and mi.max() > 0 and mi[0].max() == 0  # outside the crop: certain


def test_uncertainty_is_zero_where_all_predictions_agree():
    m = _member()
    same = ensemble_predict([m, m], _image(), SPACING, uncertainty=True)
    np.testing.assert_allclose(same.uncertainty(), 0.0, atol=1e-6)
    tta = ensemble_predict([m], _image(), SPACING, tta="all", uncertainty=True)
    assert tta.count == 16 and tta.uncertainty().max() > 0


def test_two_d_member_with_non_square_window_and_tta():
    plan = RunPlan(channel_names=["a", "b"], label_values=[0, 1], network=NetworkConfig("unet", 2, {"base_width": 4,
                   "depth": 3}), train=TrainConfig(patch_size=[1, 8, 16], amp="none"))
    member = EnsembleMember(build_model(plan).eval(), plan)
    pred = ensemble_predict([member], _image(), SPACING, tta="all", uncertainty=True)
    assert pred.count == 8 and pred.probabilities.shape == (2, 12, 14, 22)
    np.testing.assert_allclose(pred.probabilities.sum(0), 1.0, atol=1e-5)


@pytest.mark.parametrize("tta", ["none", "flips", "all"])
def test_window_count_for_the_progress_bar_is_what_is_predicted(tta):
    # Non-square windows, two preprocessings, a 2-D member: the total the bar shows must be the count reported.
    plan2d = RunPlan(channel_names=["a", "b"], label_values=[0, 1, 2], network=NetworkConfig("unet", 2, {
                     "base_width": 4, "depth": 3}), train=TrainConfig(patch_size=[1, 8, 16], amp="none"))
    members = [_member("zscore"), _member("percentile", seed=1), EnsembleMember(build_model(plan2d).eval(), plan2d)]
    members[1].plan.inference.overlap = 0.25
    expected = count_windows(prepare_groups(members, _image(), SPACING), tta)
    seen = []
    predict_groups(prepare_groups(members, _image(), SPACING), tta, progress=seen.append)
    assert expected == sum(seen) > 0


def test_ensemble_refuses_mismatched_label_schemes():
    with pytest.raises(InputError, match="label scheme"):
        ensemble_predict([_member(labels=(0, 1, 2)), _member(scheme="brats", labels=(0, 1, 2))], _image(), SPACING)
    with pytest.raises(InputError, match="label values"):
        ensemble_predict([_member(labels=(0, 1, 2)), _member(labels=(0, 1, 4))], _image(), SPACING)


def test_member_dirs_for_folds(tmp_path):
    run = tmp_path / "cv"
    for k in (0, 1, 2):
        (run / f"fold_{k}").mkdir(parents=True)
        (run / f"fold_{k}" / "plan.json").write_text("{}")
    (run / "plan.json").write_text("{}")  # cross-validation runs keep the plan on top, models in folds
    assert [p.name for p in member_dirs(run)] == ["fold_0", "fold_1", "fold_2"]
    assert [p.name for p in member_dirs(run, "0,2")] == ["fold_0", "fold_2"]
    assert member_dirs(run, "all") == member_dirs(run)
    with pytest.raises(InputError, match="folds"):
        member_dirs(run, [5])
    with pytest.raises(InputError):
        member_dirs(tmp_path / "nothing")


def test_merge_table_reproduces_seed_003_table_1():
    table = MERGE_TABLES["henry2020"]
    lookup = table.lookup([0, 1, 2, 4])
    for b, row in TABLE_1.items():
        assert [lookup[(a, b)] for a in (0, 1, 2, 4)] == row, f"B = {b}"
    a = np.array([[[0, 0, 2, 2, 1, 4]]])
    b = np.array([[[2, 4, 0, 1, 2, 0]]])
    np.testing.assert_array_equal(table.merge([a, b]), [[[2, 0, 0, 2, 1, 4]]])
    np.testing.assert_array_equal(table.merge({"B": b, "A": a}), table.merge([a, b]))


def test_merge_table_from_json_and_errors(tmp_path):
    custom = MergeTable("mine", ["x", "y"], "x", [MergeRule(take=3, where={"x": [1], "y": [1]}),
                                                  MergeRule(take="y", where={"x": [1]})])
    path = tmp_path / "table.json"
    path.write_text(json.dumps(custom.to_dict()))
    loaded = load_merge_table(path)
    assert loaded == custom
    # First matching rule decides: (1, 1) -> 3; (1, 2) -> y's 2; (0, *) -> x.
    assert loaded.lookup([0, 1, 2]) == {(0, 0): 0, (0, 1): 0, (0, 2): 0, (1, 0): 0, (1, 1): 3, (1, 2): 2,
                                        (2, 0): 2, (2, 1): 2, (2, 2): 2}
    assert load_merge_table("henry2020") == MERGE_TABLES["henry2020"]
    with pytest.raises(InputError):
        load_merge_table(tmp_path / "missing.json")
    path.write_text(json.dumps({"pipelines": ["x"], "default": "x"}))
    with pytest.raises(InputError):
        load_merge_table(path)
    with pytest.raises(ValueError):
        MergeTable("bad", ["a", "b"], "c")


# --------------------------------------------------------------------------------------------------
# CLI on a tiny trained run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from voxseg.config import TrainOptions
    from voxseg.runs import run_training

    root = tmp_path_factory.mktemp("ens")
    data = make_phantom_dataset(root / "ds", n_cases=4, shape=(20, 24, 20), seed=2)
    run = root / "run"
    options = TrainOptions(network=NetworkConfig(kwargs={"base_width": 4, "depth": 3}),
                           train=TrainConfig(patch_size=[16, 16, 16], epochs=1, iterations_per_epoch=2, num_threads=1))
    run_training(data, run, options, progress=False)
    # The same weights under another preprocessing (a min-max-like model), and a k-fold layout.
    pct = root / "run_pct"
    shutil.copytree(run, pct)
    plan = json.loads((pct / "plan.json").read_text())
    plan["preprocess"]["normalization"] = "percentile"
    (pct / "plan.json").write_text(json.dumps(plan))
    cv = root / "cv"
    cv.mkdir()
    shutil.copy(run / "plan.json", cv / "plan.json")
    for k in (0, 1):
        shutil.copytree(run, cv / f"fold_{k}")
    first = sorted((data / "imagesTr").glob("*_0000.nii.gz"))[0]
    return {"data": data, "run": run, "pct": pct, "cv": cv, "input": first, "root": root}


def _invoke(*args):
    return CliRunner().invoke(main, ["predict", "--backend", "torch", *map(str, args)])  # exact labels: one backend


def _labels(path):
    return np.asanyarray(nib.load(path).dataobj)


def test_cli_tta_uncertainty_and_probabilities(runs, tmp_path):
    out = tmp_path / "case.nii.gz"
    result = _invoke(runs["run"], runs["input"], out, "--tta", "4", "--uncertainty", "--probabilities")
    assert result.exit_code == 0, result.output
    assert "TTA: 4 variant(s)" in result.output
    shape = nib.load(runs["input"]).shape
    unc = nib.load(tmp_path / "case_uncertainty.nii.gz").get_fdata()
    assert unc.shape == shape and unc.min() >= 0 and np.isfinite(unc).all()
    assert nib.load(tmp_path / "case_prob.nii.gz").shape == shape + (4,)
    assert _invoke(runs["run"], runs["input"], out, "--tta", "sometimes").exit_code == 2


def test_cli_tta_auto_times_the_first_case_and_takes_flips_only_where_they_are_cheap(runs, tmp_path, monkeypatch):
    result = _invoke(runs["run"], runs["input"], tmp_path / "auto.nii.gz")  # the default: a tiny case is cheap
    assert result.exit_code == 0, result.output
    assert "TTA auto: flips (8 variants" in result.output
    assert _invoke(runs["run"], runs["input"], tmp_path / "flips.nii.gz", "--tta", "flips").exit_code == 0
    np.testing.assert_array_equal(_labels(tmp_path / "auto.nii.gz"), _labels(tmp_path / "flips.nii.gz"))
    monkeypatch.setattr("voxseg.infer.predict.TTA_AUTO_SECONDS", 0.0)  # now any flip costs too much
    result = _invoke(runs["run"], runs["input"], tmp_path / "auto_none.nii.gz", "--tta", "auto")
    assert result.exit_code == 0 and "TTA auto: none (flips would add" in result.output, result.output
    assert _invoke(runs["run"], runs["input"], tmp_path / "none.nii.gz", "--tta", "none").exit_code == 0
    np.testing.assert_array_equal(_labels(tmp_path / "auto_none.nii.gz"), _labels(tmp_path / "none.nii.gz"))


def test_predict_cases_with_tta_auto_chooses_as_voxseg_predict_does(runs, tmp_path):
    from pathlib import Path

    from voxseg.infer import PredictOptions, load_model, predict_cases
    from voxseg.io import find_prediction_cases

    model, plan = load_model(runs["run"])
    cases = find_prediction_cases(Path(runs["input"]), plan.channel_names)
    lines: list[str] = []
    predict_cases(model, plan, cases, tmp_path / "auto", progress=False, options=PredictOptions(tta="auto"),
                  log=lines.append)
    predict_cases(model, plan, cases, tmp_path / "flips", progress=False, options=PredictOptions(tta="flips"))
    assert len(lines) == 1 and lines[0].startswith("TTA auto: flips"), lines  # a tiny case is cheap
    name = f"{cases[0].case_id}.nii.gz"
    np.testing.assert_array_equal(_labels(tmp_path / "auto" / name), _labels(tmp_path / "flips" / name))


def test_cli_folds_and_ensembles(runs, tmp_path):
    plain = tmp_path / "plain.nii.gz"
    assert _invoke(runs["run"], runs["input"], plain).exit_code == 0
    for args in ([runs["cv"]], [runs["cv"], "--folds", "all"], [runs["run"], "--ensemble", runs["run"]]):
        out = tmp_path / "ens.nii.gz"
        result = _invoke(*args[:1], runs["input"], out, *args[1:])
        assert result.exit_code == 0, result.output
        assert "models: 2" in result.output
        np.testing.assert_array_equal(_labels(out), _labels(plain))  # identical members = one member
    result = _invoke(runs["run"], runs["pct"], runs["input"], tmp_path / "two.nii.gz")
    assert result.exit_code == 0 and "models: 2" in result.output, result.output
    result = _invoke(runs["run"], runs["pct"], runs["input"], tmp_path / "merged.nii.gz", "--merge-table", "henry2020")
    assert result.exit_code == 0 and "henry2020" in result.output, result.output
    assert set(np.unique(_labels(tmp_path / "merged.nii.gz"))) <= {0, 1, 2, 4}
    assert _invoke(runs["run"], runs["input"], tmp_path / "m.nii.gz", "--merge-table", "henry2020").exit_code == 2


def test_cli_refuses_mismatched_runs(runs, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(runs["run"], bad)
    plan = json.loads((bad / "plan.json").read_text())
    plan["label_values"] = [0, 1, 2, 3]
    (bad / "plan.json").write_text(json.dumps(plan))
    result = _invoke(runs["run"], runs["input"], tmp_path / "x.nii.gz", "--ensemble", bad)
    assert result.exit_code == 2 and "cannot be ensembled" in result.output and "label values" in result.output


def test_cli_applies_saved_postprocessing_unless_disabled(runs, tmp_path):
    from voxseg.infer.postprocess import PostRule
    from voxseg.metrics.postprocessing import PostprocessingChoice, save_postprocessing

    run = tmp_path / "pp"
    shutil.copytree(runs["run"], run)
    wipe = PostRule("remove_small", "all foreground", [1, 2, 4], min_voxels=10 ** 9)
    save_postprocessing(PostprocessingChoice(rules=[wipe]), run)
    on, off, plain = tmp_path / "on.nii.gz", tmp_path / "off.nii.gz", tmp_path / "plain.nii.gz"
    result = _invoke(run, runs["input"], on)
    assert result.exit_code == 0 and "remove all foreground components" in result.output, result.output
    assert not _labels(on).any()
    assert _invoke(run, runs["input"], off, "--no-postprocess").exit_code == 0
    assert _invoke(runs["run"], runs["input"], plain).exit_code == 0
    np.testing.assert_array_equal(_labels(off), _labels(plain))
