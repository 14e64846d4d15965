"""Label schemes: BraTS labels <-> regions in both directions, on synthetic and real volumes."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from voxseg.data.labels import (
    BRATS_REGIONS,
    REGION_NAMES,
    LabelScheme,
    check_labels_fit,
    labels_to_regions,
    regions_to_labels,
)

ET_LABEL = {"brats": 4, "brats2023": 3}


def _shared_data() -> Path:
    env = os.environ.get("VOXSEG_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def _synthetic(scheme: str, shape=(6, 7, 8), seed=0) -> np.ndarray:
    values = np.array([0, 1, 2, ET_LABEL[scheme]])
    return np.random.default_rng(seed).choice(values, size=shape).astype(np.int32)


def test_region_order_constant():
    assert REGION_NAMES == ("WT", "TC", "ET")
    assert list(BRATS_REGIONS["brats"]) == list(REGION_NAMES) == list(BRATS_REGIONS["brats2023"])


# Each label value -> which of (WT, TC, ET) it belongs to.
TABLE = [
    ("brats", 0, (0, 0, 0)),
    ("brats", 1, (1, 1, 0)),  # NCR/NET: whole tumour and core
    ("brats", 2, (1, 0, 0)),  # oedema: whole tumour only
    ("brats", 4, (1, 1, 1)),  # enhancing: all three
    ("brats2023", 0, (0, 0, 0)),
    ("brats2023", 1, (1, 1, 0)),
    ("brats2023", 2, (1, 0, 0)),
    ("brats2023", 3, (1, 1, 1)),
]


@pytest.mark.parametrize("scheme,label,regions", TABLE)
def test_label_table(scheme, label, regions):
    out = labels_to_regions(np.full((1, 1, 1), label), scheme)
    assert out.dtype == np.uint8 and out.shape == (3, 1, 1, 1)
    assert tuple(out[:, 0, 0, 0]) == regions
    assert regions_to_labels(out, scheme)[0, 0, 0] == label


@pytest.mark.parametrize("scheme", ["brats", "brats2023"])
def test_round_trip_synthetic(scheme):
    seg = _synthetic(scheme)
    regions = labels_to_regions(seg, scheme)
    assert regions.shape == (3, *seg.shape)
    assert np.array_equal(regions[REGION_NAMES.index("WT")], seg > 0)
    assert np.array_equal(regions[REGION_NAMES.index("ET")], seg == ET_LABEL[scheme])
    assert np.array_equal(regions_to_labels(regions, scheme), seg)
    assert np.array_equal(regions_to_labels(regions.astype(bool), LabelScheme(scheme)), seg)
    assert np.array_equal(regions_to_labels(regions.astype(np.float32), scheme), seg)


def test_regions_to_labels_precedence_on_inconsistent_masks():
    # voxel: (WT, TC, ET) = ET alone, TC alone, WT+ET, nothing
    regions = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0]], dtype=bool)
    assert regions_to_labels(regions, "brats").tolist() == [4, 1, 4, 0]
    assert regions_to_labels(regions, "brats2023").tolist() == [3, 1, 3, 0]
    with pytest.raises(ValueError, match="threshold"):
        regions_to_labels(np.full((3, 2), 0.7), "brats")
    with pytest.raises(ValueError, match=r"\('WT', 'TC', 'ET'\)"):
        regions_to_labels(np.zeros((4, 2), bool), "brats")


def test_check_labels_fit_messages():
    check_labels_fit([0, 1, 2, 4], "brats")
    check_labels_fit(np.array([0, 1, 2, 3]), "brats2023")
    check_labels_fit([1, 2], "brats")  # subsets fit
    with pytest.raises(ValueError, match=r"\[3\].*'brats'.*use scheme 'brats2023'"):
        check_labels_fit([0, 1, 2, 3], "brats")
    with pytest.raises(ValueError, match=r"use scheme 'brats'"):
        check_labels_fit([0, 1, 2, 4], "brats2023")
    with pytest.raises(ValueError, match="do not fit"):
        check_labels_fit([0, 5], "brats")
    with pytest.raises(ValueError, match=">= 0"):
        check_labels_fit([-1, 0], "classes")
    with pytest.raises(ValueError, match="integers"):
        check_labels_fit([0.5], "classes")
    check_labels_fit([0, 7, 9], "classes")  # no names: anything non-negative
    with pytest.raises(ValueError, match="label_names"):
        check_labels_fit([0, 1, 3], LabelScheme("classes", {1: "anterior", 2: "posterior"}))
    with pytest.raises(ValueError, match=r"\[3\]"):
        labels_to_regions(np.array([0, 3]), "brats")
    with pytest.raises(ValueError, match="region scheme"):
        labels_to_regions(np.array([0, 1]), "classes")


def test_structures():
    assert LabelScheme("brats").structures() == {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}
    assert LabelScheme("brats2023").structures() == {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}
    named = LabelScheme("classes", {0: "background", 1: "anterior", 2: "posterior"})
    assert named.structures() == {"anterior": [1], "posterior": [2]}
    assert LabelScheme("classes", {1: "", 3: "WM"}).structures() == {"label_1": [1], "WM": [3]}
    with pytest.raises(ValueError, match="label_names"):
        LabelScheme("classes").structures()


def test_scheme_properties_and_validation():
    assert LabelScheme("brats").loss_mode == "sigmoid" and LabelScheme("classes").loss_mode == "softmax"
    assert LabelScheme("brats").allowed_labels == (0, 1, 2, 4)
    assert LabelScheme("brats2023").regions["ET"] == (3,)
    with pytest.raises(ValueError, match="unknown label scheme"):
        LabelScheme("brats2020")
    with pytest.raises(ValueError, match="only for 'classes'"):
        LabelScheme("brats", {1: "x"})
    with pytest.raises(ValueError, match="unique"):
        LabelScheme("classes", {1: "a", 2: "a"})


@pytest.mark.parametrize(
    "scheme", [LabelScheme("brats"), LabelScheme("brats2023"), LabelScheme("classes", {0: "bg", 1: "CSF", 3: "WM"})]
)
def test_to_dict_round_trips_through_json(scheme):
    assert LabelScheme.from_dict(json.loads(json.dumps(scheme.to_dict()))) == scheme


def test_real_brats2018_round_trip():
    root = _shared_data() / "brats2018"
    if not root.is_dir():
        pytest.skip(f"real BraTS 2018 data not found at {root} (set VOXSEG_SHARED_DATA)")
    from voxseg.io.image import read_volume

    cases = sorted(p for p in root.iterdir() if (p / f"{p.name}_seg.nii.gz").exists())[:2]
    if len(cases) < 2:
        pytest.skip(f"fewer than 2 BraTS cases with a seg file in {root}")
    for case in cases:
        seg, _ = read_volume(case / f"{case.name}_seg.nii.gz", dtype=np.int32)
        check_labels_fit(np.unique(seg), "brats")
        regions = labels_to_regions(seg, "brats")
        wt = regions[REGION_NAMES.index("WT")]
        assert int(wt.sum()) == int((seg > 0).sum()) > 0, case.name
        assert np.array_equal(regions_to_labels(regions, "brats"), seg), case.name


# nnU-Net v2's BraTS conversion: 1 oedema, 2 non-enhancing core, 3 enhancing; regions WT, TC, ET.
NNUNET_BRATS = {"whole tumor": (1, 2, 3), "tumor core": (2, 3), "enhancing tumor": (3,)}


def test_regions_scheme_from_an_nnunet_dataset_json_round_trips():
    scheme = LabelScheme("regions", region_values=NNUNET_BRATS)
    assert scheme.paint_labels == (1, 2, 3)  # derived: the value each region holds and no later one does
    assert scheme.is_region_based and scheme.loss_mode == "sigmoid" and scheme.allowed_labels == (0, 1, 2, 3)
    assert scheme.structures() == {k: list(v) for k, v in NNUNET_BRATS.items()}
    seg = np.array([[0, 1, 2, 3], [3, 2, 1, 0]])
    regions = labels_to_regions(seg, scheme)
    assert regions.shape == (3, 2, 4) and regions[:, 0, 2].tolist() == [1, 1, 0]
    assert np.array_equal(regions_to_labels(regions, scheme), seg)
    assert LabelScheme.from_dict(json.loads(json.dumps(scheme.to_dict()))) == scheme
    with pytest.raises(ValueError, match="do not fit label scheme 'regions'"):
        labels_to_regions(np.array([0, 4]), scheme)


def test_regions_scheme_paints_the_given_region_labels_and_checks_them():
    overlapping = {"organ": (1, 2, 3), "lesion": (2, 3)}  # lesion holds two values: which one to paint?
    with pytest.raises(ValueError, match="regions_class_order"):
        LabelScheme("regions", region_values=overlapping)
    scheme = LabelScheme("regions", region_values=overlapping, region_labels=(1, 3))
    assert regions_to_labels(np.array([[1, 1, 0], [0, 1, 1]], bool), scheme).tolist() == [1, 3, 3]
    with pytest.raises(ValueError, match="not one of its values"):
        LabelScheme("regions", region_values=overlapping, region_labels=(1, 4))
    with pytest.raises(ValueError, match="one label per region"):
        LabelScheme("regions", region_values=overlapping, region_labels=(1,))
    with pytest.raises(ValueError, match="> 0"):
        LabelScheme("regions", region_values={"a": (0, 1)})
    with pytest.raises(ValueError, match="for scheme 'regions'"):
        LabelScheme("brats", region_values=NNUNET_BRATS)


def test_regions_scheme_refuses_a_paint_order_that_moves_labels_between_regions():
    with pytest.raises(ValueError, match=r"turn label 1 \(in \['whole tumor'\]\) into 2"):
        LabelScheme("regions", region_values=NNUNET_BRATS, region_labels=(2, 2, 3))


@pytest.mark.parametrize("scheme, values, regions", [
    ("brats", [0, 1, 2, 4], {}),
    ("regions", [0, 1, 2, 3], {k: list(v) for k, v in NNUNET_BRATS.items()}),
])
def test_training_region_targets_match_labels_to_regions(scheme, values, regions):
    from voxseg.config import RunPlan
    from voxseg.train.batches import loss_targets

    plan = RunPlan(channel_names=["t1"], label_values=values, label_scheme=scheme, label_regions=regions)
    consecutive = np.random.default_rng(0).integers(0, len(values), (2, 5, 6, 7)).astype(np.uint8)
    expected = np.stack([labels_to_regions(np.asarray(values)[c], plan.scheme) for c in consecutive])
    targets = loss_targets(consecutive, plan)
    assert targets.dtype.is_floating_point and targets.is_contiguous()
    assert np.array_equal(targets.numpy(), expected.astype(np.float32))
