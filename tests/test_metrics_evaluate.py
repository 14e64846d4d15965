"""Aggregation, the terminal table and evaluate_folders end to end on tiny NIfTI files."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxseg.errors import InputError, InputProblems
from voxseg.metrics import METRIC_NAMES, case_id_from_name, case_metrics, evaluate_folders, format_summary, summarise

STRUCTURES = {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}
SPACING = (2.0, 1.0, 0.8)  # (sz, sy, sx) mm


def _write(path: Path, zyx: np.ndarray, spacing=SPACING, origin=(0.0, 0.0, 0.0)) -> Path:
    """Write a (Z, Y, X) label map as NIfTI (i, j, k) = (X, Y, Z) with a diagonal affine."""
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    affine[:3, 3] = origin
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(zyx.transpose(2, 1, 0)).astype(np.uint8), affine), str(path))
    return path


def _label(seed: int, shape=(8, 12, 10)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.uint8)
    z, y, x = rng.integers(1, 3, size=3)
    lab[z:z + 5, y:y + 7, x:x + 6] = 2
    lab[z + 1:z + 4, y + 2:y + 5, x + 1:x + 4] = 1
    if seed % 2:
        lab[z + 2, y + 3, x + 2:x + 4] = 4
    return lab


def _make_case_folders(tmp_path: Path, n: int = 3) -> tuple[Path, Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Predictions flat (CASE.nii.gz); references in BraTS subject folders with an image beside the label."""
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    truth = {}
    for i in range(n):
        case = f"Brats_{i:03d}"
        ref = _label(i)
        pred = np.roll(ref, i, axis=2)
        _write(ref_dir / case / f"{case}_seg.nii.gz", ref)
        _write(ref_dir / case / f"{case}_flair.nii.gz", ref * 10)
        _write(pred_dir / f"{case}.nii.gz", pred)
        truth[case] = (pred, ref)
    return pred_dir, ref_dir, truth


# ---------------------------------------------------------------- summarise / format_summary

def _rows():
    return [
        {"case_id": "a", "structure": "S", "dice": 0.2, "hd95_mm": 4.0, "ref_empty": False, "pred_empty": False},
        {"case_id": "b", "structure": "S", "dice": 0.6, "hd95_mm": float("nan"), "ref_empty": True, "pred_empty": False},
        {"case_id": "c", "structure": "S", "dice": 1.0, "hd95_mm": 2.0, "ref_empty": False, "pred_empty": False},
        {"case_id": "d", "structure": "S", "dice": 0.4, "hd95_mm": 6.0, "ref_empty": False, "pred_empty": True},
        {"case_id": "a", "structure": "T", "dice": 0.0, "hd95_mm": 1.0, "ref_empty": False, "pred_empty": False},
    ]


def test_summarise_by_hand():
    s = summarise(_rows())
    assert s["n_cases"] == 4
    dice = s["metrics"]["S"]["dice"]
    assert dice["mean"] == pytest.approx(0.55)
    assert dice["std"] == pytest.approx(np.std([0.2, 0.6, 1.0, 0.4], ddof=1))
    assert dice["median"] == pytest.approx(0.5)
    assert dice["q25"] == pytest.approx(0.35) and dice["q75"] == pytest.approx(0.7)
    assert dice["n"] == 4
    hd = s["metrics"]["S"]["hd95_mm"]  # NaN left out
    assert hd["n"] == 3 and hd["mean"] == pytest.approx(4.0) and hd["median"] == pytest.approx(4.0)
    assert s["metrics"]["T"]["dice"] == {"mean": 0.0, "std": 0.0, "median": 0.0, "q25": 0.0, "q75": 0.0, "n": 1}
    assert "ref_empty" not in s["metrics"]["S"]
    assert s["empty_counts"]["S"] == {"ref_empty": 1, "pred_empty": 1}
    # mean Dice over structures: a 0.1, b 0.6, c 1.0, d 0.4 -> worst a, lower median d, best c
    assert s["cases"]["mean_dice"]["a"] == pytest.approx(0.1)
    assert (s["cases"]["best"], s["cases"]["median"], s["cases"]["worst"]) == ("c", "d", "a")


def test_summarise_all_nan_and_missing_keys():
    s = summarise([{"case_id": "a", "structure": "S", "rel_vol_diff": float("nan")}])
    assert s["metrics"]["S"]["rel_vol_diff"]["n"] == 0 and s["metrics"]["S"]["rel_vol_diff"]["mean"] is None
    assert s["cases"]["best"] is None
    with pytest.raises(ValueError, match="case_id"):
        summarise([{"structure": "S", "dice": 1.0}])


def test_format_summary_table():
    text = format_summary(summarise(_rows()))
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["structure", "n", "dice", "hd95_mm"]
    assert lines[2].startswith("S ") and "0.550±" in lines[2] and "4.00±2.00" in lines[2]
    assert lines[3].startswith("T ") and "0.000±0.000" in lines[3]
    assert "best c" in lines[-1] and "worst a" in lines[-1]
    assert len({len(line) for line in lines[:2]}) == 1  # header and rule align


# ---------------------------------------------------------------- evaluate_folders

@pytest.mark.parametrize(
    "name,case_id",
    [("CASE.nii.gz", "CASE"), ("CASE_seg.nii.gz", "CASE"), ("CASE_label.nii", "CASE"),
     ("hippocampus_001.nii.gz", "hippocampus_001"), ("_seg.nii.gz", "_seg")],
)
def test_case_id_from_name(name, case_id):
    assert case_id_from_name(name) == case_id


def test_evaluate_folders_end_to_end(tmp_path):
    pred_dir, ref_dir, truth = _make_case_folders(tmp_path)
    out_dir = tmp_path / "out"
    rows, summary = evaluate_folders(pred_dir, ref_dir, out_dir, STRUCTURES, progress=False)

    assert len(rows) == 3 * len(STRUCTURES)
    assert [r["case_id"] for r in rows[::3]] == sorted(truth)
    for case, (pred, ref) in truth.items():
        want = case_metrics(pred.astype(np.int32), ref.astype(np.int32), SPACING, STRUCTURES)
        got = {r["structure"]: r for r in rows if r["case_id"] == case}
        for name in STRUCTURES:
            for key in METRIC_NAMES:
                assert got[name][key] == pytest.approx(want[name][key], nan_ok=True), (case, name, key)
    et = [r for r in rows if r["structure"] == "ET" and r["case_id"] == "Brats_000"][0]
    assert et["ref_empty"] and et["pred_empty"] and et["dice"] == 1.0
    assert rows[0]["dice"] == 1.0 and rows[3]["dice"] < 1.0  # case 0 unshifted, case 1 shifted

    with open(out_dir / "metrics_per_case.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == ["case_id", "structure", *METRIC_NAMES, "ref_empty", "pred_empty"]
    assert len(table) == len(rows)
    assert float(table[3]["dice"]) == pytest.approx(rows[3]["dice"], rel=1e-15)

    document = json.loads((out_dir / "metrics_summary.json").read_text(), parse_constant=pytest.fail)
    assert {"summary", "structures", "settings", "empty_mask_policy", "surface_definitions",
            "volume_difference"} <= set(document)
    assert document["structures"] == STRUCTURES
    assert document["summary"]["n_cases"] == 3 == summary["n_cases"]
    assert set(document["summary"]["metrics"]) == set(STRUCTURES)
    assert "Archit & Adilina 2022" in document["volume_difference"]
    assert sorted(p.name for p in out_dir.iterdir()) == ["metrics_per_case.csv", "metrics_summary.json"]
    assert "WT" in format_summary(summary)


def test_evaluate_flat_reference_with_seg_suffix_and_extra_prediction(tmp_path):
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    _write(ref_dir / "x1_seg.nii.gz", _label(1))
    _write(ref_dir / "x1_t1.nii.gz", _label(1))  # an image beside the labels is not a reference
    _write(pred_dir / "x1.nii.gz", _label(1))
    _write(pred_dir / "x2.nii.gz", _label(2))
    with pytest.warns(UserWarning, match="1 prediction.*without a reference: x2"):
        rows, summary = evaluate_folders(pred_dir, ref_dir, tmp_path / "out", {"tumour": [1, 2, 4]}, progress=False)
    assert [r["case_id"] for r in rows] == ["x1"] and rows[0]["dice"] == 1.0


def test_missing_predictions_are_listed(tmp_path):
    pred_dir, ref_dir, _ = _make_case_folders(tmp_path, n=3)
    (pred_dir / "Brats_000.nii.gz").unlink()
    (pred_dir / "Brats_002.nii.gz").unlink()
    with pytest.raises(InputError) as info:
        evaluate_folders(pred_dir, ref_dir, tmp_path / "out", STRUCTURES, progress=False)
    message = str(info.value)
    assert "\n" not in message and str(pred_dir) in message
    assert "no prediction for 2 of 3 reference case(s): Brats_000, Brats_002" in message
    assert not (tmp_path / "out").exists()


def test_geometry_mismatches_are_all_named_at_once(tmp_path):
    pred_dir, ref_dir, truth = _make_case_folders(tmp_path, n=3)
    bad_shape = _write(pred_dir / "Brats_001.nii.gz", truth["Brats_001"][0][:, :, :-1])
    bad_affine = _write(pred_dir / "Brats_002.nii.gz", truth["Brats_002"][0], spacing=(2.0, 1.0, 1.0))
    with pytest.raises(InputProblems) as info:
        evaluate_folders(pred_dir, ref_dir, tmp_path / "out", STRUCTURES, progress=False)
    shape_line, affine_line = info.value.problems  # one line per bad case, in case order
    assert shape_line.startswith(f"{bad_shape}: shape (Z,Y,X) (8, 12, 9) does not match reference")
    assert "Brats_001_seg.nii.gz" in shape_line
    assert affine_line.startswith(f"{bad_affine}: affine does not match reference")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "kwargs,expected",
    [({"spacing": (2.0, 1.0, 1.0)}, "spacing (2.0, 1.0, 1.0) vs (2.0, 1.0, 0.8) mm"),
     ({"origin": (0.0, 5.0, 0.0)}, "origin")],
)
def test_affine_mismatch_says_how(tmp_path, kwargs, expected):
    pred_dir, ref_dir, truth = _make_case_folders(tmp_path, n=1)
    bad = _write(pred_dir / "Brats_000.nii.gz", truth["Brats_000"][0], **kwargs)
    with pytest.raises(InputProblems) as info:
        evaluate_folders(pred_dir, ref_dir, tmp_path / "out", STRUCTURES, progress=False)
    (line,) = info.value.problems
    assert line.startswith(f"{bad}: affine does not match reference") and expected in line


def test_predicted_labels_that_no_structure_scores_are_said(tmp_path):
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    _write(ref_dir / "x1.nii.gz", _label(2))  # labels 0, 1, 2
    pred = _label(2)
    pred[0, 0, :2] = 4  # e.g. BraTS 2018 enhancing (4) scored against 2023 labels (ET = 3)
    _write(pred_dir / "x1.nii.gz", pred)
    with pytest.warns(UserWarning) as said:
        evaluate_folders(pred_dir, ref_dir, tmp_path / "out", {"tumour": [1, 2, 3]}, progress=False)
    (line,) = [str(w.message) for w in said]
    assert line == (f"{pred_dir}: label 4 is predicted in 1 case(s) (x1) but belongs to no evaluated structure "
                    f"(tumour): not scored (see the confusion matrix)")
    _write(ref_dir / "x1.nii.gz", pred)  # the references hold it too: the scheme does not fit the data
    with pytest.warns(UserWarning) as said:
        evaluate_folders(pred_dir, ref_dir, tmp_path / "out", {"tumour": [1, 2, 3]}, progress=False)
    assert sorted(str(w.message).split(":")[0] for w in said) == sorted([str(pred_dir), str(ref_dir)])


def test_a_prediction_with_non_integer_values_is_not_a_label_map(tmp_path):
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    _write(ref_dir / "x1.nii.gz", _label(2))
    affine = np.diag([SPACING[2], SPACING[1], SPACING[0], 1.0])
    values = _label(2).transpose(2, 1, 0).astype(np.float32)
    (pred_dir).mkdir()
    nib.save(nib.Nifti1Image(values, affine), str(pred_dir / "x1.nii.gz"))  # integers stored as float: fine
    evaluate_folders(pred_dir, ref_dir, tmp_path / "out", {"tumour": [1, 2]}, progress=False)
    values[0, 0, 0] = 0.3
    nib.save(nib.Nifti1Image(values, affine), str(pred_dir / "x1.nii.gz"))
    with pytest.raises(InputError, match="not a label map: 1 voxel.* non-integer values \\(e.g. 0.3\\)"):
        evaluate_folders(pred_dir, ref_dir, tmp_path / "out", {"tumour": [1, 2]}, progress=False)


def test_folder_problems(tmp_path):
    pred_dir, ref_dir, _ = _make_case_folders(tmp_path, n=1)
    with pytest.raises(InputError, match="reference folder not found"):
        evaluate_folders(pred_dir, tmp_path / "nope", tmp_path / "out", STRUCTURES, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no prediction NIfTI files"):
        evaluate_folders(tmp_path / "empty", ref_dir, tmp_path / "out", STRUCTURES, progress=False)
    _write(pred_dir / "Brats_000_seg.nii.gz", _label(0))
    with pytest.raises(InputError, match="two prediction files for case 'Brats_000'"):
        evaluate_folders(pred_dir, ref_dir, tmp_path / "out", STRUCTURES, progress=False)


def test_float_labels_and_penalty(tmp_path):
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    ref = _label(0)
    affine = np.diag([SPACING[2], SPACING[1], SPACING[0], 1.0])
    ref_dir.mkdir()
    nib.save(nib.Nifti1Image(ref.transpose(2, 1, 0).astype(np.float32), affine), str(ref_dir / "c.nii.gz"))
    _write(pred_dir / "c.nii.gz", np.zeros_like(ref))
    rows, _ = evaluate_folders(pred_dir, ref_dir, tmp_path / "out", {"WT": [1, 2]}, penalty_mm=50.0, progress=False)
    assert rows[0]["dice"] == 0.0 and rows[0]["pred_empty"] and rows[0]["hd95_mm"] == 50.0
    rows, _ = evaluate_folders(pred_dir, ref_dir, tmp_path / "out", {"WT": [1, 2]}, progress=False)
    assert rows[0]["hd_mm"] == pytest.approx(math.sqrt(16**2 + 12**2 + 8**2))


def test_outputs_inside_prediction_folder_are_ignored_on_rerun(tmp_path):
    # The CLI's default --out is the prediction folder itself.
    pred_dir, ref_dir, _ = _make_case_folders(tmp_path, n=2)
    first, _ = evaluate_folders(pred_dir, ref_dir, pred_dir, STRUCTURES, progress=False)
    second, _ = evaluate_folders(pred_dir, ref_dir, pred_dir, STRUCTURES, progress=False)
    assert len(first) == len(second) == 2 * len(STRUCTURES)
    assert (pred_dir / "metrics_per_case.csv").exists() and not list(pred_dir.glob(".*tmp*"))


def test_cli_says_warnings_and_each_mismatch_in_one_line(tmp_path):
    import subprocess
    import sys

    pred_dir, ref_dir, truth = _make_case_folders(tmp_path, n=2)
    _write(pred_dir / "extra.nii.gz", truth["Brats_000"][0])
    run = [sys.executable, "-m", "voxseg.cli", "evaluate", str(pred_dir), str(ref_dir), "--out", str(tmp_path / "out")]
    proc = subprocess.run(run, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if "extra" in line]
    assert warned == [f"warning: {pred_dir}: ignoring 1 prediction(s) without a reference: extra"], proc.stderr
    for case_id in ("Brats_000", "Brats_001"):
        _write(pred_dir / f"{case_id}.nii.gz", truth[case_id][0][:, :, :-1])
    from click.testing import CliRunner

    from voxseg.cli import main

    result = CliRunner().invoke(main, run[3:])  # in this process: one interpreter start (above) is enough
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 2 and isinstance(result.exception, SystemExit), result.output


def test_cli_lesionwise_summary_shows_the_lesion_columns(tmp_path):
    from click.testing import CliRunner

    from voxseg.cli import main

    pred_dir, ref_dir, _ = _make_case_folders(tmp_path, n=2)
    args = ["evaluate", str(pred_dir), str(ref_dir), "--label-scheme", "brats", "--out", str(tmp_path / "out")]
    plain = CliRunner().invoke(main, args)
    lesion = CliRunner().invoke(main, args + ["--lesionwise"])
    assert plain.exit_code == 0 == lesion.exit_code, lesion.output
    header = next(line for line in lesion.output.splitlines() if "structure  n" in line)  # after the bar's \r
    assert header.split()[-2:] == ["lesion_dice", "lesion_hd95_mm"]
    assert "lesion_dice" not in plain.output
