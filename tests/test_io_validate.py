"""Every validation check produces its one-line message; broken files become problems, not exceptions."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxseg.io import (
    Dataset,
    Problem,
    ValidationReport,
    format_table,
    geometry_difference,
    load_dataset,
    validate_dataset,
)

SHAPE_ZYX = (8, 10, 12)


def _affine(spacing_xyz=(0.8, 1.2, 2.5), angle_deg=10.0, origin=(-10.0, 5.0, 30.0)) -> np.ndarray:
    t = np.radians(angle_deg)
    rot = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(spacing_xyz)
    a[:3, 3] = origin
    return a


def _write(path: Path, zyx: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(zyx).transpose(2, 1, 0), _affine() if affine is None else affine), str(path))
    return path


def _image(shape=SHAPE_ZYX) -> np.ndarray:
    return np.random.default_rng(0).normal(100, 10, size=shape).astype(np.float32)


def _label(shape=SHAPE_ZYX, dtype=np.uint8) -> np.ndarray:
    label = np.zeros(shape, dtype=dtype)
    label[2:6, 3:7, 4:9] = 1
    return label


def _subject(root: Path, case: str, channels=("t1", "t2"), label=True) -> Path:
    for c in channels:
        _write(root / case / f"{case}_{c}.nii.gz", _image())
    if label:
        _write(root / case / f"{case}_seg.nii.gz", _label())
    return root


def _messages(report: ValidationReport) -> str:
    return "\n".join(str(p) for p in report.problems)


@pytest.fixture
def clean(tmp_path) -> Path:
    root = tmp_path / "ds"
    for case in ("c1", "c2"):
        _subject(root, case)
    return root


def _shared_data() -> Path:
    env = os.environ.get("VOXSEG_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def _real(*parts: str) -> Path:
    path = _shared_data().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set VOXSEG_SHARED_DATA)")
    return path


# ---------------------------------------------------------------------------------------------------------


def test_clean_dataset_is_ok(clean):
    report = validate_dataset(load_dataset(clean))
    assert report.ok and report.problems == []
    assert [r.case_id for r in report.rows] == ["c1", "c2"]
    row = report.rows[0]
    assert row.n_channels == 2 and row.shape == SHAPE_ZYX and row.label_values == [0, 1]
    np.testing.assert_allclose(row.spacing, (2.5, 1.2, 0.8), atol=1e-6)
    assert "no problems found in 2 cases" in format_table(report)


def test_problem_str_is_path_colon_message():
    p = Problem("c1", Path("/a/b.nii.gz"), "constant image")
    assert str(p) == "/a/b.nii.gz: constant image"


def test_geometry_difference_hand_computed():
    a = np.eye(4)
    b = np.eye(4)
    b[:3, 3] = (3, 4, 0)
    assert geometry_difference(a, b) == pytest.approx((5.0, 0.0, 0.0))
    b = np.diag([1.0, 1.5, 1.0, 1.0])
    assert geometry_difference(a, b) == pytest.approx((0.0, 0.5, 0.0))
    b = np.eye(4)
    b[:2, :2] = [[0, -1], [1, 0]]  # 90 deg about z
    assert geometry_difference(a, b) == pytest.approx((0.0, 0.0, 90.0))
    assert geometry_difference(_affine(angle_deg=10), _affine(angle_deg=10.002))[2] == pytest.approx(0.002, abs=1e-6)


def test_shape_mismatch_gives_both_shapes(clean):
    _write(clean / "c1" / "c1_seg.nii.gz", _label((8, 10, 11)))
    report = validate_dataset(load_dataset(clean))
    assert not report.ok
    (p,) = report.problems
    assert p.case_id == "c1" and p.path == clean / "c1" / "c1_seg.nii.gz"
    assert "shape mismatch" in p.message and "(8, 10, 11)" in p.message and "(8, 10, 12)" in p.message


@pytest.mark.parametrize(
    "affine, expected",
    [
        (_affine(origin=(-8.0, 5.0, 30.0)), "origin off by 2.000 mm"),
        (_affine(spacing_xyz=(0.8, 1.2, 3.0)), "spacing off by 0.500 mm"),
        (_affine(angle_deg=15.0), "direction off by 5.000 deg"),
    ],
)
def test_affine_mismatch_says_by_how_much(clean, affine, expected):
    _write(clean / "c2" / "c2_seg.nii.gz", _label(), affine)
    (p,) = validate_dataset(load_dataset(clean)).problems
    assert p.message.startswith("affine mismatch with image c2_t1.nii.gz")
    assert expected in p.message


def test_float32_header_rounding_is_within_tolerance(clean):
    _write(clean / "c2" / "c2_seg.nii.gz", _label(), _affine(origin=(-10.0 + 2e-5, 5.0, 30.0)))
    assert validate_dataset(load_dataset(clean)).ok


def test_channels_with_different_geometry(clean):
    _write(clean / "c1" / "c1_t2.nii.gz", _image(), _affine(origin=(-10.0, 5.0, 33.0)))
    _write(clean / "c2" / "c2_t2.nii.gz", _image((8, 10, 11)))
    text = _messages(validate_dataset(load_dataset(clean)))
    assert "c1_t2.nii.gz: channel t2 geometry differs from channel t1: origin off by 3.000 mm" in text
    assert "c2_t2.nii.gz: channel t2 shape mismatch" in text


def test_missing_channel(clean):
    (clean / "c1" / "c1_t2.nii.gz").unlink()
    (p,) = validate_dataset(load_dataset(clean)).problems
    assert str(p) == f"{clean / 'c1'}: case c1: missing channel t2"


def test_no_label_and_label_without_image(clean):
    (clean / "c1" / "c1_seg.nii.gz").unlink()
    _write(clean / "c3" / "c3_seg.nii.gz", _label())
    report = validate_dataset(load_dataset(clean))
    text = _messages(report)
    assert f"{clean / 'c1' / 'c1_t1.nii.gz'}: no label file for case c1" in text
    assert f"{clean / 'c3' / 'c3_seg.nii.gz'}: label without image" in text
    assert len(report.problems) == 2  # the image-less case is one line, not one per channel
    assert report.rows[2].shape == SHAPE_ZYX  # summarised from its label


def test_test_set_without_any_label_is_ok(tmp_path):
    root = tmp_path / "test"
    _subject(root, "c1", label=False)
    assert validate_dataset(load_dataset(root)).ok
    assert not validate_dataset(load_dataset(root), require_labels=True).ok


def test_unexpected_label_values_from_dataset_json(tmp_path):
    root = tmp_path / "nn"
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}, "file_ending": ".nii.gz"}))
    _write(root / "imagesTr" / "a_0000.nii.gz", _image())
    label = _label()
    label[0, 0, :2] = (3, 5)
    _write(root / "labelsTr" / "a.nii.gz", label)
    ds = load_dataset(root)
    (p,) = validate_dataset(ds).problems
    assert p.message == "unexpected label values [3, 5] (allowed: [0, 1])"
    assert validate_dataset(ds, allowed_labels={0, 1, 3, 5}).ok


def test_unexpected_label_values_without_label_names(clean):
    label = _label(dtype=np.int16)
    label[0, 0, 0] = -1
    _write(clean / "c1" / "c1_seg.nii.gz", label)
    floats = _label().astype(np.float32)
    floats[0, 0, 0] = 0.5
    _write(clean / "c2" / "c2_seg.nii.gz", floats)
    report = validate_dataset(load_dataset(clean))
    text = _messages(report)
    assert "c1_seg.nii.gz: unexpected label values [-1] (negative)" in text
    assert "c2_seg.nii.gz: unexpected label values: 1 non-integer voxels, e.g. [0.5]" in text
    assert validate_dataset(load_dataset(clean), allowed_labels={0, 1}).problems[0].message.startswith("unexpected label values [-1]")


def test_integer_valued_float_label_is_fine(clean):
    _write(clean / "c1" / "c1_seg.nii.gz", _label().astype(np.float32))
    report = validate_dataset(load_dataset(clean))
    assert report.ok and report.rows[0].label_values == [0, 1]


def test_nan_inf_and_constant_images(clean):
    image = _image()
    image[0, 0, :3] = np.nan
    image[1, 1, :2] = np.inf
    _write(clean / "c1" / "c1_t1.nii.gz", image)
    _write(clean / "c2" / "c2_t2.nii.gz", np.zeros(SHAPE_ZYX, np.int16))
    text = _messages(validate_dataset(load_dataset(clean)))
    assert "c1_t1.nii.gz: image has 3 NaN and 2 Inf voxels" in text
    assert "c2_t2.nii.gz: constant image (every voxel = 0)" in text


@pytest.mark.parametrize("victim", ["c1_t2.nii.gz", "c1_seg.nii.gz"])
def test_truncated_file_is_a_problem_not_an_exception(clean, victim):
    path = clean / "c1" / victim
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    report = validate_dataset(load_dataset(clean))
    (p,) = report.problems
    assert p.path == path and "truncated" in p.message
    assert [r.case_id for r in report.rows] == ["c1", "c2"]  # the other case is still checked


def test_gzip_data_under_a_nii_name_says_rename(clean):
    path = clean / "c1" / "c1_t2.nii.gz"
    path.rename(path.with_name("c1_t2.nii"))
    (p,) = validate_dataset(load_dataset(clean)).problems
    assert p.path.name == "c1_t2.nii" and p.message == "gzip-compressed data in a .nii file: rename it to .nii.gz"


def test_background_only_counts_labels_when_all_are_empty(clean):
    assert validate_dataset(load_dataset(clean)).background_only() == 0
    for case in ("c1", "c2"):
        _write(clean / case / f"{case}_seg.nii.gz", np.zeros(SHAPE_ZYX, np.uint8))
    report = validate_dataset(load_dataset(clean))
    assert report.ok and report.background_only() == 2 and report.background_only({"c1"}) == 1


def test_format_table_is_fixed_width_and_lists_problems(clean):
    (clean / "c2" / "c2_seg.nii.gz").unlink()
    report = validate_dataset(load_dataset(clean), progress=True)
    text = format_table(report)
    lines = text.splitlines()
    assert lines[0].split() == ["case", "channels", "shape", "(Z,Y,X)", "spacing", "(mm)", "voxel", "order", "labels"]
    col = lines[0].index("shape")
    assert all(line[col - 2 : col] == "  " for line in lines[1:4])  # columns line up
    assert "8x10x12" in lines[2] and "2.5x1.2x0.8" in lines[2] and lines[2].endswith("0,1")
    assert lines[2].split()[-2] == report.rows[0].orientation  # the voxel order of the case's files
    assert lines[-2] == "1 problem:"
    assert lines[-1] == str(report.problems[0])


def test_report_to_dict_is_json(clean):
    report = validate_dataset(load_dataset(clean))
    assert json.loads(json.dumps(report.to_dict()))["rows"][0]["shape"] == list(SHAPE_ZYX)


# ---------------------------------------------------------------------------------------------------------
# Real data (skipped when ../shared/data is absent)


def test_real_hippocampus_names_case_118():
    report = validate_dataset(load_dataset(_real("hippocampus")))
    assert len(report.rows) == 203
    assert [p.case_id for p in report.problems] == ["hippocampus_118"]
    assert "hippocampus_118" in str(report.problems[0]) and "no label" in report.problems[0].message


def test_real_brats_two_cases():
    ds = load_dataset(_real("brats2018"))
    ds = Dataset(ds.root, ds.layout, ds.channel_names, ds.cases[:2], ds.label_names)
    report = validate_dataset(ds, allowed_labels={0, 1, 2, 4})
    assert report.ok, format_table(report)
    assert all(r.n_channels == 4 and r.shape == (155, 240, 240) for r in report.rows)


def test_real_ibsr_one_case():
    ds = load_dataset(_real("ibsr18", "Training_Set"))
    ds = Dataset(ds.root, ds.layout, ds.channel_names, ds.cases[:1], ds.label_names)
    report = validate_dataset(ds, allowed_labels={0, 1, 2, 3})
    assert report.ok, format_table(report)
    assert report.rows[0].shape == (256, 128, 256)
