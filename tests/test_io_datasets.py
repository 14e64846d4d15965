"""Layout detection, channel order, prediction inputs and read_case, on tiny synthetic datasets and real data."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxseg.errors import InputError
from voxseg.io import Case, Dataset, find_prediction_cases, load_dataset, read_case

SHAPE_ZYX = (8, 10, 12)
BRATS_CHANNELS = ["flair", "t1", "t1ce", "t2"]


def _affine(spacing_xyz=(0.8, 1.2, 2.5), angle_deg=10.0, origin=(-10.0, 5.0, 30.0)) -> np.ndarray:
    t = np.radians(angle_deg)
    rot = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(spacing_xyz)
    a[:3, 3] = origin
    return a


def _write(path: Path, zyx: np.ndarray, trailing: int = 0) -> Path:
    """Write a ``(Z, Y, X)`` array as NIfTI (i, j, k) with the test affine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(zyx).transpose(2, 1, 0)
    nib.save(nib.Nifti1Image(data.reshape(data.shape + (1,) * trailing), _affine()), str(path))
    return path


def _image(value: float) -> np.ndarray:
    """Channel ``c`` holds ``value`` plus a ramp, so channel order is checkable after reading."""
    return (np.full(SHAPE_ZYX, value) + np.arange(np.prod(SHAPE_ZYX)).reshape(SHAPE_ZYX) * 1e-3).astype(np.float32)


def _label(dtype=np.uint8) -> np.ndarray:
    label = np.zeros(SHAPE_ZYX, dtype=dtype)
    label[2:6, 3:7, 4:9] = 1
    return label


def _make_nnunet(root: Path, cases=("b_case", "a_case"), channels=("T1", "T2"), subset="Tr", labels=True) -> Path:
    # Keys deliberately out of order: the index, not the JSON order, sets the channel order.
    meta = {
        "channel_names": {str(i): n for i, n in reversed(list(enumerate(channels)))},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(meta))
    for case in cases:
        for c in range(len(channels)):
            _write(root / f"images{subset}" / f"{case}_{c:04d}.nii.gz", _image(c))
        if labels:
            _write(root / f"labels{subset}" / f"{case}.nii.gz", _label())
    return root


def _make_paired(root: Path, n=3, unlabelled=("case_2",)) -> Path:
    for i in range(n):
        name = f"case_{i}.nii.gz"
        _write(root / "images" / name, _image(0))
        if f"case_{i}" not in unlabelled:
            _write(root / "labels" / name, _label())
    return root


def _make_brats(root: Path, cases=("s2", "s1"), skip=None) -> Path:
    for case in cases:
        # Written in non-alphabetical order on purpose.
        for value, channel in ((3, "t2"), (0, "flair"), (2, "t1ce"), (1, "t1")):
            if (case, channel) != skip:
                _write(root / case / f"{case}_{channel}.nii.gz", _image(value))
        _write(root / case / f"{case}_seg.nii.gz", _label(np.int16))
    return root


def _make_ibsr(root: Path, cases=("IBSR_01", "IBSR_02")) -> Path:
    for case in cases:
        _write(root / case / f"{case}.nii.gz", _image(0).astype(np.int16), trailing=1)
        _write(root / case / f"{case}_seg.nii.gz", _label(np.int16), trailing=1)
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
# Layout detection


def test_nnunet_layout(tmp_path):
    root = _make_nnunet(tmp_path / "Dataset001_X")
    ds = load_dataset(root)
    assert ds.layout == "nnunet"
    assert ds.channel_names == ["T1", "T2"]
    assert ds.label_names == {0: "background", 1: "lesion"}
    assert [c.case_id for c in ds.cases] == ["a_case", "b_case"]
    case = ds.cases[0]
    assert [p.name for p in case.image_paths] == ["a_case_0000.nii.gz", "a_case_0001.nii.gz"]
    assert case.label_path.name == "a_case.nii.gz" and case.missing_channels == []


def test_nnunet_test_subset_without_labels(tmp_path):
    root = _make_nnunet(tmp_path / "ds", subset="Ts", labels=False)
    ds = load_dataset(root)
    assert ds.layout == "nnunet" and len(ds.cases) == 2
    assert all(c.label_path is None for c in ds.cases)


def test_nnunet_missing_channel_and_orphan_label(tmp_path):
    root = _make_nnunet(tmp_path / "ds")
    (root / "imagesTr" / "a_case_0001.nii.gz").unlink()
    _write(root / "labelsTr" / "c_case.nii.gz", _label())
    ds = load_dataset(root)
    a, c = ds.case("a_case"), ds.case("c_case")
    assert a.missing_channels == ["T2"] and len(a.image_paths) == 1
    assert c.image_paths == [] and c.label_path is not None


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "cannot parse dataset.json"),
        (json.dumps({"labels": {"background": 0}}), "channel_names"),
        (json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0}, "file_ending": ".mha"}), "file_ending"),
    ],
)
def test_bad_dataset_json(tmp_path, content, match):
    root = _make_nnunet(tmp_path / "ds")
    (root / "dataset.json").write_text(content)
    with pytest.raises(InputError, match=match) as info:
        load_dataset(root)
    assert "dataset.json" in str(info.value)


@pytest.mark.parametrize("third", ["T1", "t1"])  # --channels t1 would not know which one it means
def test_dataset_json_naming_two_channels_alike_is_one_error(tmp_path, third):
    root = _make_nnunet(tmp_path / "ds", channels=("T1", "FLAIR", third))
    with pytest.raises(InputError, match=r'"t1" \(channels 0, 2\)') as info:
        load_dataset(root)
    assert info.value.path == root / "dataset.json"


def test_dataset_json_without_background_entry_allows_0(tmp_path):
    root = _make_nnunet(tmp_path / "ds")
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"lesion": 1}
    (root / "dataset.json").write_text(json.dumps(meta))
    assert load_dataset(root).label_names == {0: "background", 1: "lesion"}


def test_region_based_dataset_json_keeps_its_regions_apart_from_label_names(tmp_path):
    root = _make_nnunet(tmp_path / "ds")
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3}
    meta["regions_class_order"] = [1, 2, 3]
    (root / "dataset.json").write_text(json.dumps(meta))
    ds = load_dataset(root)
    assert ds.label_regions == {"whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
    assert list(ds.label_regions) == ["whole tumor", "tumor core", "enhancing tumor"]  # output channel order
    assert ds.region_labels == [1, 2, 3]
    # label 1 is not "whole tumor": a region's name is not the name of each of its values
    assert ds.label_names == {0: "background", 1: "label_1", 2: "label_2", 3: "enhancing tumor"}
    assert Dataset.from_dict(json.loads(json.dumps(ds.to_dict()))).label_regions == ds.label_regions
    meta["labels"] = {"background": 0, "lesion": 1}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="regions_class_order"):
        load_dataset(root)


def test_nifti_ending_other_than_file_ending_is_still_read(tmp_path):
    root = _make_nnunet(tmp_path / "ds")
    for gz in (root / "imagesTr" / "a_case_0001.nii.gz", root / "labelsTr" / "a_case.nii.gz"):
        nib.save(nib.load(gz), str(gz.with_name(gz.name[:-3])))
        gz.unlink()
    case = load_dataset(root).case("a_case")
    assert case.missing_channels == [] and [p.name for p in case.image_paths] == ["a_case_0000.nii.gz", "a_case_0001.nii"]
    assert case.label_path.name == "a_case.nii"
    _write(root / "imagesTr" / "a_case_0001.nii.gz", _image(1))
    with pytest.raises(InputError, match="two files for channel 1 of case a_case: a_case_0001.nii and a_case_0001.nii.gz"):
        load_dataset(root)


def test_broken_symlink_is_listed_and_named_on_reading(tmp_path):
    root = _make_nnunet(tmp_path / "ds")
    link = root / "imagesTr" / "a_case_0001.nii.gz"
    link.unlink()
    link.symlink_to(tmp_path / "gone.nii.gz")
    case = load_dataset(root).case("a_case")
    assert case.missing_channels == [] and case.image_paths[1] == link
    with pytest.raises(InputError, match="broken symbolic link") as info:
        read_case(case)
    assert info.value.path == link


def test_paired_layout(tmp_path):
    root = _make_paired(tmp_path / "paired")
    (root / "images" / "._case_0.nii.gz").write_bytes(b"macOS resource fork")  # must be ignored
    ds = load_dataset(root)
    assert ds.layout == "paired" and ds.channel_names == ["image"] and ds.label_names is None
    assert [c.case_id for c in ds.cases] == ["case_0", "case_1", "case_2"]
    assert ds.case("case_2").label_path is None
    assert ds.case("case_0").label_path == root / "labels" / "case_0.nii.gz"


def test_subject_layout_brats_channels_sorted(tmp_path):
    ds = load_dataset(_make_brats(tmp_path / "brats"))
    assert ds.layout == "subject"
    assert ds.channel_names == BRATS_CHANNELS
    assert [c.case_id for c in ds.cases] == ["s1", "s2"]
    assert [p.name for p in ds.cases[0].image_paths] == [f"s1_{c}.nii.gz" for c in BRATS_CHANNELS]
    assert ds.cases[0].label_path.name == "s1_seg.nii.gz"


def test_subject_layout_missing_channel_is_recorded(tmp_path):
    ds = load_dataset(_make_brats(tmp_path / "brats", skip=("s1", "t1ce")))
    assert ds.channel_names == BRATS_CHANNELS
    s1 = ds.case("s1")
    assert s1.missing_channels == ["t1ce"]
    assert [p.name for p in s1.image_paths] == ["s1_flair.nii.gz", "s1_t1.nii.gz", "s1_t2.nii.gz"]
    with pytest.raises(InputError, match="missing channel.*t1ce"):
        read_case(s1)


def test_subject_layout_ibsr_and_label_suffix(tmp_path):
    root = _make_ibsr(tmp_path / "ibsr")
    (root / "IBSR_02" / "IBSR_02_seg.nii.gz").rename(root / "IBSR_02" / "IBSR_02_label.nii.gz")
    ds = load_dataset(root)
    assert ds.layout == "subject" and ds.channel_names == ["image"]
    assert [c.label_path.name for c in ds.cases] == ["IBSR_01_seg.nii.gz", "IBSR_02_label.nii.gz"]
    image, label, geometry = read_case(ds.cases[0])
    assert image.shape == (1, *SHAPE_ZYX) and label.shape == SHAPE_ZYX
    assert geometry.disk_shape == (12, 10, 8, 1)


def test_dataset_to_dict_round_trips_through_json(tmp_path):
    ds = load_dataset(_make_nnunet(tmp_path / "ds"))
    again = Dataset.from_dict(json.loads(json.dumps(ds.to_dict())))
    assert again == ds


def test_unusable_folders_raise_one_line(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no dataset layout recognised"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "noimages" / "images").mkdir(parents=True)
    with pytest.raises(InputError, match="no cases") as info:
        load_dataset(tmp_path / "noimages")
    assert "\n" not in str(info.value)
    (tmp_path / "nojson" / "imagesTr").mkdir(parents=True)
    with pytest.raises(InputError, match="dataset.json"):
        load_dataset(tmp_path / "nojson")


# ---------------------------------------------------------------------------------------------------------
# read_case


def test_read_case_channel_order_dtype_and_label(tmp_path):
    ds = load_dataset(_make_brats(tmp_path / "brats"))
    image, label, geometry = read_case(ds.cases[0])
    assert image.shape == (4, *SHAPE_ZYX) and image.dtype == np.float32
    np.testing.assert_allclose(image[:, 0, 0, 0], [0, 1, 2, 3])  # flair, t1, t1ce, t2
    assert label.dtype == np.int32 and set(np.unique(label)) == {0, 1}
    np.testing.assert_allclose(geometry.affine, _affine(), atol=1e-5)
    image, label, _ = read_case(ds.cases[0], with_label=False)
    assert label is None


def test_read_case_float_labels(tmp_path):
    root = _make_paired(tmp_path / "p", n=1, unlabelled=())
    _write(root / "labels" / "case_0.nii.gz", _label().astype(np.float32))
    _, label, _ = read_case(load_dataset(root).cases[0])
    assert label.dtype == np.int32 and label.max() == 1
    bad = _label().astype(np.float32)
    bad[0, 0, 0] = 0.5
    _write(root / "labels" / "case_0.nii.gz", bad)
    with pytest.raises(InputError, match="non-integer"):
        read_case(load_dataset(root).cases[0])


def test_read_case_rejects_nan_intensities(tmp_path):
    root = _make_paired(tmp_path / "p", n=1, unlabelled=())
    image = _image(0)
    image[1, 2, 3] = np.nan
    _write(root / "images" / "case_0.nii.gz", image)
    with pytest.raises(InputError, match="1 NaN or infinite") as err:
        read_case(load_dataset(root).cases[0], with_label=False)
    assert err.value.args and "case_0.nii.gz" in str(err.value)


def test_read_case_channel_shape_mismatch(tmp_path):
    root = _make_brats(tmp_path / "b", cases=("s1",))
    _write(root / "s1" / "s1_t2.nii.gz", np.zeros((8, 10, 11), np.float32))
    with pytest.raises(InputError, match="shape"):
        read_case(load_dataset(root).cases[0])


# ---------------------------------------------------------------------------------------------------------
# find_prediction_cases


def test_predict_single_file(tmp_path):
    path = _write(tmp_path / "scan.nii.gz", _image(0))
    cases = find_prediction_cases(path, ["CT"])
    assert cases == [Case("scan", [path], None)]
    with pytest.raises(InputError, match="expects 2"):
        find_prediction_cases(path, ["T1", "T2"])


def test_predict_nnunet_first_channel_file(tmp_path):
    for c in (1, 0):
        _write(tmp_path / f"pat_{c:04d}.nii.gz", _image(c))
    _write(tmp_path / "other_0000.nii.gz", _image(0))
    _write(tmp_path / "other_0001.nii.gz", _image(1))
    cases = find_prediction_cases(tmp_path / "pat_0000.nii.gz", ["T1", "T2"])
    assert len(cases) == 1 and cases[0].case_id == "pat"
    assert [p.name for p in cases[0].image_paths] == ["pat_0000.nii.gz", "pat_0001.nii.gz"]
    with pytest.raises(InputError, match="missing T3"):
        find_prediction_cases(tmp_path / "pat_0000.nii.gz", ["T1", "T2", "T3"])


def test_predict_case_folder_uses_model_order(tmp_path):
    root = _make_brats(tmp_path / "brats")
    model_order = ["T2", "FLAIR", "t1", "t1ce"]  # a different order and case than the files
    cases = find_prediction_cases(root / "s1", model_order)
    assert len(cases) == 1 and cases[0].label_path.name == "s1_seg.nii.gz"
    assert [p.name for p in cases[0].image_paths] == ["s1_t2.nii.gz", "s1_flair.nii.gz", "s1_t1.nii.gz", "s1_t1ce.nii.gz"]
    image, _, _ = read_case(cases[0])
    np.testing.assert_allclose(image[:, 0, 0, 0], [3, 0, 1, 2])


def test_predict_dataset_folders(tmp_path):
    brats = find_prediction_cases(_make_brats(tmp_path / "brats"), BRATS_CHANNELS)
    assert [c.case_id for c in brats] == ["s1", "s2"]
    paired = find_prediction_cases(_make_paired(tmp_path / "paired"), ["T1"])
    assert len(paired) == 3
    nnunet = find_prediction_cases(_make_nnunet(tmp_path / "nn", subset="Ts", labels=False), ["t1", "t2"])
    assert [c.case_id for c in nnunet] == ["a_case", "b_case"] and len(nnunet[0].image_paths) == 2
    ibsr = find_prediction_cases(_make_ibsr(tmp_path / "ibsr"), ["T1"])
    assert len(ibsr) == 2


def test_predict_flat_folders(tmp_path):
    # A folder named like its files' prefix is still many single-channel cases for a 1-channel model.
    for i in (1, 2):
        _write(tmp_path / "hippo" / f"hippo_{i:03d}.nii.gz", _image(0))
    _write(tmp_path / "hippo" / "hippo_001_seg.nii.gz", _label())
    cases = find_prediction_cases(tmp_path / "hippo", ["image"])
    assert [c.case_id for c in cases] == ["hippo_001", "hippo_002"]
    assert cases[0].label_path.name == "hippo_001_seg.nii.gz" and cases[1].label_path is None
    for case in ("x", "y"):
        for c in range(2):
            _write(tmp_path / "nn" / f"{case}_{c:04d}.nii.gz", _image(c))
    cases = find_prediction_cases(tmp_path / "nn", ["T1", "T2"])
    assert [c.case_id for c in cases] == ["x", "y"]


def test_predict_channel_mismatch_names_folder_and_channels(tmp_path):
    root = _make_brats(tmp_path / "brats", skip=("s1", "t1ce"))
    with pytest.raises(InputError) as info:
        find_prediction_cases(root / "s1", BRATS_CHANNELS)
    assert str(info.value).startswith(str(root / "s1"))
    assert "missing t1ce" in str(info.value)
    with pytest.raises(InputError) as info:
        find_prediction_cases(root / "s2", ["flair", "t1", "t2"])
    assert "extra t1ce" in str(info.value)
    with pytest.raises(InputError, match="missing t1ce"):
        find_prediction_cases(root, BRATS_CHANNELS)


def test_predict_missing_path(tmp_path):
    with pytest.raises(InputError, match="not found"):
        find_prediction_cases(tmp_path / "nothing", ["T1"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no NIfTI files"):
        find_prediction_cases(tmp_path / "empty", ["T1"])


# ---------------------------------------------------------------------------------------------------------
# Real data (skipped when ../shared/data is absent)


def test_real_hippocampus_paired():
    ds = load_dataset(_real("hippocampus"))
    assert ds.layout == "paired" and ds.channel_names == ["image"]
    assert len(ds.cases) == 203
    assert [c.case_id for c in ds.cases if c.label_path is None] == ["hippocampus_118"]


def test_real_brats_subject_folders():
    ds = load_dataset(_real("brats2018"))
    assert ds.layout == "subject" and len(ds.cases) == 14
    assert ds.channel_names == BRATS_CHANNELS
    assert all(len(c.image_paths) == 4 and c.label_path is not None for c in ds.cases)
    cases = find_prediction_cases(ds.cases[0].image_paths[0].parent, BRATS_CHANNELS)
    assert cases[0].image_paths == ds.cases[0].image_paths


def test_real_ibsr_training_set():
    ds = load_dataset(_real("ibsr18", "Training_Set"))
    assert ds.layout == "subject" and ds.channel_names == ["image"] and len(ds.cases) == 10
    image, label, geometry = read_case(ds.cases[0])
    assert image.shape == (1, 256, 128, 256) and label.shape == (256, 128, 256)
    assert geometry.disk_shape == (256, 128, 256, 1)
    assert set(np.unique(label)) <= {0, 1, 2, 3}


def test_a_folder_of_datasets_names_them(tmp_path):
    _make_nnunet(tmp_path / "download" / "Task01")
    (tmp_path / "download" / "Training_Set" / "IBSR_01").mkdir(parents=True)
    (tmp_path / "download" / "Training_Set" / "IBSR_01" / "IBSR_01_ana.nii.gz").write_bytes(b"")
    (tmp_path / "download" / "notes").mkdir()
    with pytest.raises(InputError, match="no dataset layout recognised") as info:
        load_dataset(tmp_path / "download")
    message = str(info.value)
    assert "subfolders Task01/ (nnunet), Training_Set/ (subject) are datasets" in message
    assert "notes" not in message and "\n" not in message
