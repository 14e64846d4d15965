"""Orientation: voxseg's exact flips / permutations against nibabel's canonical reorientation, and
preprocessing that gives the same network input whatever voxel order a scan is stored in."""
import nibabel as nib
import numpy as np
import pytest

from voxseg.data import (PreprocessConfig, check_orientation_code, preprocess_case, reorient, reoriented_spacing,
                         restore_to_original)
from voxseg.io import orientation_code


def _stored_as(img: nib.Nifti1Image, code: str) -> nib.Nifti1Image:
    """The same scan with its voxels stored in orientation ``code`` (nibabel's own reorientation)."""
    ornt = nib.orientations.ornt_transform(nib.io_orientation(img.affine), nib.orientations.axcodes2ornt(tuple(code)))
    return img.as_reoriented(ornt)


def _zyx(img: nib.Nifti1Image) -> np.ndarray:
    return np.asanyarray(img.dataobj).transpose(2, 1, 0)


@pytest.fixture
def scan():
    rng = np.random.default_rng(0)
    data = rng.random((7, 9, 11)).astype(np.float32)  # (i, j, k); every axis a different length
    affine = np.diag([1.0, 1.5, 2.5, 1.0])
    affine[:3, 3] = [-3.0, 4.0, 10.0]
    return nib.Nifti1Image(data, affine)


@pytest.mark.parametrize("code", ["LPS", "PSR", "IRA", "RAS"])
def test_reorient_matches_nibabel_and_keeps_spacing_with_its_axis(scan, code):
    stored = _stored_as(scan, code)
    assert orientation_code(stored.affine) == code
    canonical = nib.as_closest_canonical(stored)
    np.testing.assert_array_equal(reorient(_zyx(stored), code, "RAS"), _zyx(canonical))
    zooms = stored.header.get_zooms()[:3]
    assert reoriented_spacing(tuple(reversed(zooms)), code, "RAS") == pytest.approx((2.5, 1.5, 1.0))
    # Channel-first arrays and the way back.
    stacked = np.stack([_zyx(stored), 2 * _zyx(stored)])
    there = reorient(stacked, code, "RAS", channel_first=True)
    np.testing.assert_array_equal(there[1], 2 * _zyx(canonical))
    np.testing.assert_array_equal(reorient(there, "RAS", code, channel_first=True), stacked)


def test_orientation_codes_are_checked():
    assert check_orientation_code("lps") == "LPS"
    for bad in ("RRS", "RA", "XYZ", "RASL"):
        with pytest.raises(ValueError, match="one of each"):
            check_orientation_code(bad)
    with pytest.raises(ValueError, match="one of each"):
        PreprocessConfig(orientation="RAR")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_preprocessing_gives_one_network_input_for_every_storage_order(scan):
    # An off-centre ellipsoid (~19% of the voxels): resampled to 2 mm and back it keeps Dice ~0.9, while
    # all background scores 0 and a way back flipped along any one axis scores <= 0.5.
    i, j, k = np.ogrid[:7, :9, :11]
    label = (((i - 4.0) / 2.6) ** 2 + ((j - 5.0) / 3.2) ** 2 + ((k - 7.0) / 3.6) ** 2 <= 1).astype(np.uint8)
    label_img = nib.Nifti1Image(label, scan.affine)
    config = PreprocessConfig(orientation="RAS", crop_to_nonzero=False, target_spacing=(2.0, 2.0, 2.0))
    seen = []
    for code in ("RAS", "LPS", "PSR"):
        image, lab = _stored_as(scan, code), _stored_as(label_img, code)
        zooms = tuple(float(z) for z in reversed(image.header.get_zooms()[:3]))
        case = preprocess_case(_zyx(image)[None], zooms, config, label=_zyx(lab), affine=image.affine)
        assert case.record.reoriented == (None if code == "RAS" else (code, "RAS"))
        seen.append(case)
        # The way back lands in the file's own voxel order and shape: the RAS case's way back, reoriented.
        restored = restore_to_original(case.label, case.record, is_label=True)
        assert restored.shape == _zyx(lab).shape
        ras_back = restore_to_original(seen[0].label, seen[0].record, is_label=True)
        np.testing.assert_array_equal(restored, reorient(ras_back, "RAS", code))
        assert _dice(ras_back > 0, _zyx(label_img) > 0) > 0.8  # (through 2 mm and back: close, not exact)
        probs = np.stack([1.0 - case.label, case.label]).astype(np.float32)
        back = restore_to_original(probs, case.record, is_label=False)
        assert back.shape == (2,) + _zyx(lab).shape and back.flags.c_contiguous
    for other in seen[1:]:
        np.testing.assert_array_equal(other.image, seen[0].image)
        np.testing.assert_array_equal(other.label, seen[0].label)
    with pytest.raises(ValueError, match="affine"):
        preprocess_case(_zyx(scan)[None], (2.5, 1.5, 1.0), config)


def test_without_resampling_the_way_back_is_exact(scan):
    stored = _stored_as(scan, "PSR")
    label = (_zyx(stored) > 0.5).astype(np.uint8)
    zooms = tuple(float(z) for z in reversed(stored.header.get_zooms()[:3]))
    case = preprocess_case(_zyx(stored)[None], zooms, PreprocessConfig(orientation="RAS"), label=label,
                           affine=stored.affine)
    np.testing.assert_array_equal(restore_to_original(case.label, case.record, is_label=True), label)
    assert PreprocessConfig.from_dict(PreprocessConfig(orientation="ras").to_dict()).orientation == "RAS"
    assert "orientation" not in PreprocessConfig().to_dict()  # stamps of caches made before stay valid
