"""BraTS 2023 lesion-wise Dice / HD95: hand-computed cases and consistency on a real BraTS label."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from voxseg.metrics.case import binary_metrics
from voxseg.metrics.lesionwise import BRATS2023_LESION_PARAMETERS, lesionwise_metrics

SHAPE = (20, 40, 40)
ONE_MM = (1.0, 1.0, 1.0)


def _box(z, y, x):
    mask = np.zeros(SHAPE, bool)
    mask[z[0]:z[1], y[0]:y[1], x[0]:x[1]] = True
    return mask


def _two_lesions_one_fp(b_size=4):
    """Reference: lesion A (4^3 = 64 voxels) and lesion B (b_size^3).
    Prediction: A shifted by one voxel along x (overlap 4*4*3 = 48, Dice 2*48/128 = 0.75, HD95 1 mm),
    B missed (Dice 0, HD95 374), and a 3^3 false positive far from both (Dice 0, HD95 374)."""
    a = _box((2, 6), (2, 6), (2, 6))
    b = _box((10, 10 + b_size), (25, 25 + b_size), (25, 25 + b_size))
    ref = a | b
    pred = _box((2, 6), (2, 6), (3, 7)) | _box((14, 17), (2, 5), (30, 33))
    return pred, ref


def test_two_lesions_and_one_false_positive_by_hand():
    pred, ref = _two_lesions_one_fp()
    out = lesionwise_metrics(pred, ref, ONE_MM)
    assert out["lesion_dice"] == pytest.approx((0.75 + 0 + 0) / 3)
    assert out["lesion_hd95_mm"] == pytest.approx((1.0 + 374 + 374) / 3)
    assert (out["n_ref_lesions"], out["n_tp_lesions"], out["n_fn_lesions"], out["n_fp_lesions"]) == (2, 1, 1, 1)


def test_small_reference_lesions_are_not_scored():
    # B is 3^3 = 27 voxels = 27 mm^3 <= 50 mm^3: left out of numerator and denominator.
    pred, ref = _two_lesions_one_fp(b_size=3)
    out = lesionwise_metrics(pred, ref, ONE_MM)
    assert out["lesion_dice"] == pytest.approx(0.75 / 2)
    assert out["n_ref_lesions"] == 1 and out["n_fp_lesions"] == 1
    # The threshold is a volume in mm^3: at 2 mm voxels B is 216 mm^3 and counts again.
    out = lesionwise_metrics(pred, ref, (2.0, 1.0, 1.0), min_lesion_volume_mm3=50)
    assert out["n_ref_lesions"] == 2


def test_optional_false_positive_size_filter():
    pred, ref = _two_lesions_one_fp()  # the false positive has 27 voxels
    assert lesionwise_metrics(pred, ref, ONE_MM, min_fp_volume_mm3=26)["n_fp_lesions"] == 1
    out = lesionwise_metrics(pred, ref, ONE_MM, min_fp_volume_mm3=27)
    assert out["n_fp_lesions"] == 0 and out["lesion_dice"] == pytest.approx(0.75 / 2)


def test_prediction_matching_only_a_small_lesion_is_not_a_false_positive():
    ref = _box((2, 6), (2, 6), (2, 6)) | _box((12, 14), (30, 32), (30, 32))  # 64 + 8 voxels
    pred = _box((2, 6), (2, 6), (2, 6)) | _box((12, 14), (30, 32), (30, 32))
    out = lesionwise_metrics(pred, ref, ONE_MM)
    assert out["lesion_dice"] == 1.0 and out["n_fp_lesions"] == 0 and out["n_ref_lesions"] == 1


def test_dilation_groups_nearby_reference_components():
    # Two 4^3 components with a 2-voxel gap: one lesion after dilating 3 voxels, two without dilation.
    ref = _box((2, 6), (2, 6), (2, 6)) | _box((2, 6), (2, 6), (8, 12))
    pred = _box((2, 6), (2, 6), (2, 6))  # finds only the first component
    grouped = lesionwise_metrics(pred, ref, ONE_MM, dilation_iterations=3)
    assert grouped["n_ref_lesions"] == 1
    assert grouped["lesion_dice"] == pytest.approx(2 * 64 / (64 + 128))
    separate = lesionwise_metrics(pred, ref, ONE_MM, dilation_iterations=0)
    assert separate["n_ref_lesions"] == 2 and separate["lesion_dice"] == pytest.approx(0.5)


def test_a_prediction_near_but_outside_a_lesion_is_matched_through_the_dilation():
    ref = _box((2, 6), (2, 6), (2, 6))
    pred = _box((2, 6), (2, 6), (8, 10))  # 2 voxels beyond the lesion: inside its 3-voxel dilation
    out = lesionwise_metrics(pred, ref, ONE_MM)
    assert out["n_fp_lesions"] == 0 and out["n_tp_lesions"] == 1 and out["lesion_dice"] == 0.0
    assert out["lesion_hd95_mm"] < 374


@pytest.mark.parametrize(
    "pred_any, ref_any, dice, hd95",
    [(False, False, 1.0, 0.0), (True, False, 0.0, 374.0), (False, True, 0.0, 374.0)],
)
def test_empty_masks(pred_any, ref_any, dice, hd95):
    cube = _box((2, 6), (2, 6), (2, 6))
    empty = np.zeros(SHAPE, bool)
    out = lesionwise_metrics(cube if pred_any else empty, cube if ref_any else empty, ONE_MM)
    assert (out["lesion_dice"], out["lesion_hd95_mm"]) == (dice, hd95)


def test_parameters_and_errors():
    assert BRATS2023_LESION_PARAMETERS["BraTS-GLI"] == (3, 50.0)
    with pytest.raises(ValueError):
        lesionwise_metrics(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 3), bool), ONE_MM)
    with pytest.raises(ValueError):
        lesionwise_metrics(np.zeros(SHAPE, bool), np.zeros(SHAPE, bool), ONE_MM, connectivity=8)


# --- real data ----------------------------------------------------------------------------------------


def _shared_data() -> Path:
    env = os.environ.get("VOXSEG_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def _brats_label() -> tuple[np.ndarray, tuple[float, float, float]]:
    root = _shared_data() / "brats2018"
    segs = sorted(root.glob("*/*_seg.nii.gz")) if root.is_dir() else []
    if not segs:
        pytest.skip(f"BraTS 2018 sample not found under {root} (set VOXSEG_SHARED_DATA)")
    from voxseg.io.image import read_volume

    label, geometry = read_volume(segs[0], dtype=None)
    return np.rint(label).astype(np.int32), geometry.spacing


@pytest.mark.parametrize("structure", [[1, 2, 4], [1, 4], [4]], ids=["WT", "TC", "ET"])
def test_real_label_against_itself_and_an_eroded_copy(structure):
    label, spacing = _brats_label()
    ref = np.isin(label, structure)
    if not ref.any():
        pytest.skip("structure absent in this case")
    same = lesionwise_metrics(ref, ref, spacing)
    assert same["lesion_dice"] == 1.0 and same["lesion_hd95_mm"] == 0.0 and same["n_fp_lesions"] == 0

    eroded = ndimage.binary_erosion(ref, iterations=2)
    plain = binary_metrics(eroded, ref, spacing)
    lesion = lesionwise_metrics(eroded, ref, spacing)
    # Every lesion loses its rim, small ones vanish: per-lesion Dice weighs them as much as big ones.
    assert lesion["lesion_dice"] < 1.0
    assert lesion["lesion_dice"] <= plain["dice"] + 1e-12
    assert lesion["n_fp_lesions"] == 0  # erosion only removes voxels
    # A stray 4^3 false positive in a corner barely moves the plain Dice but costs a whole lesion.
    stray = eroded.copy()
    stray[:4, :4, :4] = True
    with_fp = lesionwise_metrics(stray, ref, spacing)
    assert with_fp["n_fp_lesions"] == 1
    assert with_fp["lesion_dice"] == pytest.approx(lesion["lesion_dice"] * lesion["n_ref_lesions"]
                                                   / (lesion["n_ref_lesions"] + 1))
    assert with_fp["lesion_dice"] < binary_metrics(stray, ref, spacing)["dice"]
    # Plain metrics stay consistent with each other on real data: IoU = Dice / (2 - Dice).
    assert plain["iou"] == pytest.approx(plain["dice"] / (2 - plain["dice"]), rel=1e-12)
