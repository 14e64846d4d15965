"""Confusion matrix (per case, summed in metrics_summary.json) and lesion-wise columns of evaluate_folders."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxseg.metrics.aggregate import confusion_summary
from voxseg.metrics.case import METRIC_NAMES, case_metrics, confusion_matrix
from voxseg.metrics.evaluate import evaluate_folders
from voxseg.metrics.overlap import confusion_counts

# --- confusion_matrix (hand-computed) -----------------------------------------------------------------


@pytest.mark.parametrize(
    "ref, pred, labels, expected",
    [
        # rows = reference, columns = prediction
        ([0, 0, 1, 1, 4, 4], [0, 1, 1, 1, 4, 0], [0, 1, 4], [[1, 1, 0], [0, 2, 0], [1, 0, 1]]),
        # the label order sets the row/column order
        ([0, 0, 1, 1, 4, 4], [0, 1, 1, 1, 4, 0], [4, 0, 1], [[1, 1, 0], [0, 1, 1], [0, 0, 2]]),
        # values not listed (2) are not counted
        ([2, 0, 1], [0, 2, 1], [0, 1], [[0, 0], [0, 1]]),
        ([0, 0], [0, 0], [0, 1], [[2, 0], [0, 0]]),
    ],
)
def test_confusion_matrix_by_hand(ref, pred, labels, expected):
    out = confusion_matrix(np.array(pred).reshape(1, 1, -1), np.array(ref).reshape(1, 1, -1), labels)
    assert out.dtype == np.int64 and out.shape == (len(labels), len(labels))
    np.testing.assert_array_equal(out, expected)


def test_confusion_matrix_agrees_with_binary_counts():
    rng = np.random.default_rng(0)
    ref = rng.choice([0, 1, 2, 4], size=(6, 7, 8))
    pred = rng.choice([0, 1, 2, 4], size=(6, 7, 8))
    labels = [0, 1, 2, 4]
    matrix = confusion_matrix(pred, ref, labels)
    assert matrix.sum() == ref.size
    for i, v in enumerate(labels):  # one-vs-rest counts are sums of the matrix
        tp, fp, fn, tn = confusion_counts(pred == v, ref == v)
        assert (tp, fp, fn) == (matrix[i, i], matrix[:, i].sum() - tp, matrix[i, :].sum() - tp)
        assert tn == ref.size - tp - fp - fn
    dice_4 = case_metrics(pred, ref, (1, 1, 1), {"four": [4]})["four"]["dice"]
    assert dice_4 == pytest.approx(2 * matrix[3, 3] / (matrix[3, :].sum() + matrix[:, 3].sum()))


def test_confusion_matrix_errors():
    with pytest.raises(ValueError):
        confusion_matrix(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), [0])
    with pytest.raises(ValueError):
        confusion_matrix(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), [0, 0])
    with pytest.raises(ValueError):
        confusion_matrix(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), [])


def test_confusion_summary():
    out = confusion_summary(np.array([[3, 1], [0, 0]]), [0, 4])
    assert out["matrix"] == [[3, 1], [0, 0]] and out["labels"] == [0, 4]
    assert out["recall"] == {"0": 0.75, "4": None}
    assert out["precision"] == {"0": 1.0, "4": 0.0}
    json.dumps(out, allow_nan=False)


# --- evaluate_folders ---------------------------------------------------------------------------------

STRUCTURES = {"WT": [1, 2, 4], "ET": [4]}


def _write(path: Path, zyx: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(zyx.transpose(2, 1, 0)).astype(np.uint8), np.eye(4)), str(path))


def _cases(tmp_path: Path):
    """Case a: two reference lesions (WT), one found exactly; a 3^3 false positive. Case b: perfect."""
    shape = (16, 24, 24)
    ref_a = np.zeros(shape, np.uint8)
    ref_a[1:6, 1:6, 1:6] = 2
    ref_a[2:4, 2:4, 2:4] = 4
    ref_a[9:14, 15:20, 15:20] = 1
    pred_a = ref_a.copy()
    pred_a[9:14, 15:20, 15:20] = 0  # second lesion missed
    pred_a[12:15, 1:4, 18:21] = 2  # false positive
    ref_b = np.zeros(shape, np.uint8)
    ref_b[4:10, 4:10, 4:10] = 2
    for case, pred, ref in [("a", pred_a, ref_a), ("b", ref_b, ref_b)]:
        _write(tmp_path / "pred" / f"{case}.nii.gz", pred)
        _write(tmp_path / "ref" / f"{case}_seg.nii.gz", ref)
    return (pred_a, ref_a), (ref_b, ref_b)


def test_evaluate_writes_summed_confusion_matrix(tmp_path):
    (pa, ra), (pb, rb) = _cases(tmp_path)
    rows, summary = evaluate_folders(tmp_path / "pred", tmp_path / "ref", tmp_path / "out", STRUCTURES, progress=False)
    document = json.loads((tmp_path / "out" / "metrics_summary.json").read_text())
    cm = document["summary"]["confusion_matrix"]
    assert cm["labels"] == [0, 1, 2, 4] and cm == summary["confusion_matrix"]
    expected = confusion_matrix(pa, ra, [0, 1, 2, 4]) + confusion_matrix(pb, rb, [0, 1, 2, 4])
    np.testing.assert_array_equal(cm["matrix"], expected)
    assert np.sum(cm["matrix"]) == pa.size + pb.size
    assert "lesion_dice" not in rows[0] and document["settings"]["lesionwise"] is False
    with open(tmp_path / "out" / "metrics_per_case.csv", newline="") as handle:
        assert list(next(csv.DictReader(handle))) == ["case_id", "structure", *METRIC_NAMES, "ref_empty", "pred_empty"]


def test_evaluate_lesionwise_columns(tmp_path):
    _cases(tmp_path)
    rows, summary = evaluate_folders(tmp_path / "pred", tmp_path / "ref", tmp_path / "out", STRUCTURES,
                                     progress=False, lesionwise=True)
    by_key = {(r["case_id"], r["structure"]): r for r in rows}
    # Case a, WT: lesion 1 (125 voxels) exact, lesion 2 (125) missed, one 27-voxel false positive.
    assert by_key[("a", "WT")]["lesion_dice"] == pytest.approx(1 / 3)
    assert by_key[("a", "WT")]["lesion_hd95_mm"] == pytest.approx(2 * 374 / 3)
    # Case a, ET: one 8-voxel lesion (<= 50 mm^3, not scored), found: nothing to score -> 1 and 0 mm.
    assert by_key[("a", "ET")]["lesion_dice"] == 1.0 and by_key[("a", "ET")]["lesion_hd95_mm"] == 0.0
    assert by_key[("b", "WT")]["lesion_dice"] == 1.0
    assert summary["metrics"]["WT"]["lesion_dice"]["mean"] == pytest.approx((1 / 3 + 1) / 2)
    with open(tmp_path / "out" / "metrics_per_case.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == ["case_id", "structure", *METRIC_NAMES, "lesion_dice", "lesion_hd95_mm",
                              "ref_empty", "pred_empty"]
    document = json.loads((tmp_path / "out" / "metrics_summary.json").read_text())
    assert document["settings"]["lesion_min_volume_mm3"] == 50.0
    assert "BraTS 2023" in document["lesionwise_definition"]
