"""Per-structure metrics: hand-computed cases, the empty-mask policy, and MONAI 1.6 as the oracle."""
from __future__ import annotations

import glob
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from voxseg.metrics import (
    EMPTY_MASK_POLICY,
    METRIC_NAMES,
    binary_metrics,
    case_metrics,
    confusion_counts,
    default_penalty_mm,
    surface_distances,
    surface_voxels,
)


def _shared_data() -> Path:
    env = os.environ.get("VOXSEG_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def _blob(shape, seed, sigma=3.0, level=0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), sigma) > level


# ---------------------------------------------------------------- hand-computed

def test_bars_overlap_by_hand():
    # 1x1x10 volume; pred = x 2..6 (5 voxels), ref = x 4..9 (6 voxels): TP 3, FP 2, FN 3, TN 2.
    pred = np.zeros((1, 1, 10), bool)
    ref = np.zeros((1, 1, 10), bool)
    pred[0, 0, 2:7] = True
    ref[0, 0, 4:10] = True
    assert confusion_counts(pred, ref) == (3, 2, 3, 2)
    m = binary_metrics(pred, ref, (1.0, 1.0, 2.0), tolerance_mm=2.0)
    assert m["dice"] == pytest.approx(6 / 11)
    assert m["iou"] == pytest.approx(3 / 8)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(3 / 6)
    assert m["specificity"] == pytest.approx(2 / 4)
    # voxel = 2 mm^3 = 0.002 ml
    assert m["vol_ref_ml"] == pytest.approx(0.012)
    assert m["vol_pred_ml"] == pytest.approx(0.010)
    assert m["vol_diff_ml"] == pytest.approx(-0.002)
    assert m["abs_vol_diff_ml"] == pytest.approx(0.002)
    assert m["rel_vol_diff"] == pytest.approx(1 / 6)  # Archit & Adilina (2022): |V_ref - V_pred| / V_ref


def test_bars_surface_by_hand():
    # In a 1x1xN volume every voxel is on the surface (its y/z neighbours are outside the array).
    # pred->ref distances (x spacing 2 mm): [4, 2, 0, 0, 0]; ref->pred: [0, 0, 0, 2, 4, 6].
    pred = np.zeros((1, 1, 10), bool)
    ref = np.zeros((1, 1, 10), bool)
    pred[0, 0, 2:7] = True
    ref[0, 0, 4:10] = True
    d_pr, d_rp = surface_distances(pred, ref, (1.0, 1.0, 2.0))
    np.testing.assert_allclose(d_pr, [4, 2, 0, 0, 0])
    np.testing.assert_allclose(d_rp, [0, 0, 0, 2, 4, 6])
    m = binary_metrics(pred, ref, (1.0, 1.0, 2.0), tolerance_mm=2.0)
    assert m["hd_mm"] == pytest.approx(6.0)
    # directed 95th percentiles (linear): pred 2 + 0.8 * 2 = 3.6; ref 4 + 0.75 * 2 = 5.5; max = 5.5
    assert m["hd95_mm"] == pytest.approx(5.5)
    assert m["assd_mm"] == pytest.approx(18 / 11)
    assert m["surface_dice"] == pytest.approx(8 / 11)


def test_cubes_offset_anisotropic_by_hand():
    # 4x4x4-voxel cubes, pred shifted by k = 2 voxels along z; spacing (sz, sy, sx) = (3, 1, 0.5) mm.
    # Per direction, 56 surface voxels: 24 at 0 mm, 4 at 0.5 mm (face centre -> nearest ring voxel in x),
    # 12 at 3 mm (one slice off the opposite face), 16 at 6 mm (two slices off).
    spacing = (3.0, 1.0, 0.5)
    ref = np.zeros((12, 12, 12), bool)
    ref[2:6, 4:8, 4:8] = True
    pred = np.roll(ref, 2, axis=0)
    assert surface_voxels(ref).sum() == 56
    d_pr, d_rp = surface_distances(pred, ref, spacing)
    for d in (d_pr, d_rp):
        values, counts = np.unique(np.round(d, 9), return_counts=True)
        assert dict(zip(values.tolist(), counts.tolist())) == {0.0: 24, 0.5: 4, 3.0: 12, 6.0: 16}
    m = binary_metrics(pred, ref, spacing, tolerance_mm=3.0)
    assert m["hd_mm"] == pytest.approx(6.0)
    assert m["hd95_mm"] == pytest.approx(6.0)
    assert m["assd_mm"] == pytest.approx(2 * 134 / 112)
    assert m["surface_dice"] == pytest.approx(80 / 112)
    assert m["dice"] == pytest.approx(0.5)


def test_cubes_offset_along_fine_axis():
    # The same cubes shifted by 3 voxels along x (0.5 mm): the far faces are 1.5 mm apart.
    spacing = (3.0, 1.0, 0.5)
    ref = np.zeros((12, 12, 12), bool)
    ref[2:6, 4:8, 2:6] = True
    pred = np.roll(ref, 3, axis=2)
    m = binary_metrics(pred, ref, spacing)
    assert m["hd_mm"] == pytest.approx(1.5)
    assert m["dice"] == pytest.approx(2 * 16 / 128)


# ---------------------------------------------------------------- empty-mask policy

def test_both_empty():
    empty = np.zeros((4, 5, 6), bool)
    m = binary_metrics(empty, empty, (1.0, 1.0, 1.0))
    for key in ("dice", "iou", "precision", "recall", "specificity", "surface_dice"):
        assert m[key] == 1.0, key
    for key in ("hd95_mm", "hd_mm", "assd_mm", "vol_diff_ml", "rel_vol_diff"):
        assert m[key] == 0.0, key
    assert m["ref_empty"] is True and m["pred_empty"] is True


@pytest.mark.parametrize("pred_is_empty", [True, False])
def test_exactly_one_empty(pred_is_empty):
    spacing = (3.0, 1.0, 0.5)
    shape = (10, 20, 30)
    full = np.zeros(shape, bool)
    full[2:5, 3:9, 4:20] = True
    empty = np.zeros(shape, bool)
    pred, ref = (empty, full) if pred_is_empty else (full, empty)
    m = binary_metrics(pred, ref, spacing)
    diagonal = math.sqrt(30**2 + 20**2 + 15**2)
    assert default_penalty_mm(shape, spacing) == pytest.approx(diagonal)
    for key in ("dice", "iou", "precision", "recall", "surface_dice"):
        assert m[key] == 0.0, key
    for key in ("hd95_mm", "hd_mm", "assd_mm"):
        assert m[key] == pytest.approx(diagonal), key
    assert m["ref_empty"] is (not pred_is_empty) and m["pred_empty"] is pred_is_empty
    if pred_is_empty:
        assert m["rel_vol_diff"] == 1.0 and m["specificity"] == 1.0
    else:
        assert math.isnan(m["rel_vol_diff"])  # undefined without a reference volume
        assert m["specificity"] == pytest.approx(1 - full.sum() / full.size)
    custom = binary_metrics(pred, ref, spacing, penalty_mm=100.0)
    assert custom["hd95_mm"] == custom["hd_mm"] == custom["assd_mm"] == 100.0


def test_policy_text_is_exported():
    assert "Both empty" in EMPTY_MASK_POLICY and "diagonal" in EMPTY_MASK_POLICY
    assert "\n" not in EMPTY_MASK_POLICY


def test_case_metrics_regions_and_flags():
    ref = np.zeros((6, 8, 8), np.int32)
    ref[1:5, 2:6, 2:6] = 2
    ref[2:4, 3:5, 3:5] = 1  # no label 4 (enhancing tumour) anywhere
    pred = ref.copy()
    pred[1, 2, 2] = 0
    structures = {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}
    out = case_metrics(pred, ref, (1.0, 1.0, 1.0), structures)
    assert list(out) == ["WT", "TC", "ET"]
    assert set(out["WT"]) == set(METRIC_NAMES) | {"ref_empty", "pred_empty"}
    assert out["WT"]["dice"] == pytest.approx(2 * 63 / 127)
    assert out["TC"]["dice"] == 1.0 and out["TC"]["hd95_mm"] == 0.0
    assert out["ET"]["dice"] == 1.0 and out["ET"]["ref_empty"] and out["ET"]["pred_empty"]
    with pytest.raises(ValueError, match="shape"):
        case_metrics(pred[:-1], ref, (1.0, 1.0, 1.0), structures)
    with pytest.raises(ValueError, match="no label values"):
        case_metrics(pred, ref, (1.0, 1.0, 1.0), {"bad": []})


def test_crop_and_kdtree_paths_equal_full_edt():
    pred, ref = _blob((20, 30, 25), 1), _blob((20, 30, 25), 2)
    pred[0, 0, 0] = True  # touches the array corner: border voxels count as surface
    spacing = np.array([2.0, 0.7, 1.3])
    full_pred, full_ref = surface_voxels(pred), surface_voxels(ref)
    want = ndimage.distance_transform_edt(~full_ref, sampling=spacing)[full_pred]
    for method in ("edt", "kdtree"):
        got, _ = surface_distances(pred, ref, spacing, method=method)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- MONAI as the oracle
# (each comparison skips by itself when MONAI is absent; the hand-computed tests above still run)


def _monai(pred: np.ndarray, ref: np.ndarray, spacing, tolerance_mm: float) -> dict[str, float]:
    import torch

    monai_metrics = pytest.importorskip("monai.metrics")
    p = torch.from_numpy(pred.astype(np.float32))[None, None]
    r = torch.from_numpy(ref.astype(np.float32))[None, None]
    sp = [float(s) for s in spacing]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "dice": monai_metrics.compute_dice(p, r, include_background=True).item(),
            "hd95_mm": monai_metrics.compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=sp).item(),
            "hd_mm": monai_metrics.compute_hausdorff_distance(p, r, include_background=True, spacing=sp).item(),
            "assd_mm": monai_metrics.compute_average_surface_distance(
                p, r, include_background=True, symmetric=True, spacing=sp
            ).item(),
            "surface_dice": monai_metrics.compute_surface_dice(
                p, r, [tolerance_mm], include_background=True, spacing=sp
            ).item(),
        }


def _assert_matches_monai(pred, ref, spacing, tolerance_mm=2.0):
    ours = binary_metrics(pred, ref, spacing, tolerance_mm=tolerance_mm)
    theirs = _monai(pred, ref, spacing, tolerance_mm)
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, rel=1e-5, abs=1e-5), key


@pytest.mark.parametrize("seed,spacing", [(0, (1.0, 1.0, 1.0)), (1, (2.5, 0.8, 1.1)), (2, (5.0, 0.5, 0.5))])
def test_random_blobs_match_monai(seed, spacing):
    shape = (24, 40, 32)
    _assert_matches_monai(_blob(shape, seed), _blob(shape, seed + 100), spacing)


def _hippocampus_labels(n: int) -> list[Path]:
    files = sorted((_shared_data() / "hippocampus" / "labels").glob("hippocampus_*.nii.gz"))
    if not files:
        pytest.skip(f"hippocampus labels not found under {_shared_data()} (set VOXSEG_SHARED_DATA)")
    return files[:n]


def test_hippocampus_perturbed_matches_monai():
    from voxseg.io.image import read_volume

    for path, spacing in zip(_hippocampus_labels(2), [None, (1.0, 1.3, 0.9)]):
        label, geometry = read_volume(path, dtype=np.int32)
        for labels in ([1], [2], [1, 2]):
            ref = np.isin(label, labels)
            eroded = ndimage.binary_erosion(ref)
            shifted = np.roll(ref, (1, -1, 2), axis=(0, 1, 2))
            for pred in (eroded, shifted | np.roll(ref, 3, axis=2)):
                _assert_matches_monai(pred, ref, spacing or geometry.spacing, tolerance_mm=1.0)


def test_brats_regions_match_monai_and_are_fast():
    from voxseg.io.image import read_volume

    files = sorted(glob.glob(str(_shared_data() / "brats2018" / "*" / "*_seg.nii.gz")))
    if not files:
        pytest.skip(f"BraTS segmentations not found under {_shared_data()} (set VOXSEG_SHARED_DATA)")
    ref, geometry = read_volume(files[0], dtype=np.int32)
    assert ref.shape == (155, 240, 240)
    pred = np.roll(ref, (1, 2, -1), axis=(0, 1, 2))
    pred[ndimage.binary_erosion(ref == 2, iterations=2)] = 4  # label confusion inside the oedema
    pred[5:8, 10:14, 200:205] = 2  # a far-away false positive
    structures = {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}
    ours = case_metrics(pred, ref, geometry.spacing, structures, tolerance_mm=1.0)
    for name, labels in structures.items():
        theirs = _monai(np.isin(pred, labels), np.isin(ref, labels), geometry.spacing, 1.0)
        for key, value in theirs.items():
            assert ours[name][key] == pytest.approx(value, rel=1e-5, abs=1e-5), (name, key)
