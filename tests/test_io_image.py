"""Geometry round trips of voxseg.io.image on tiny synthetic NIfTI files (and a real IBSR file if present)."""
from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxseg.errors import InputError
from voxseg.io import ImageGeometry, read_geometry, read_volume, write_volume

SHAPE_ZYX = (8, 10, 12)


def _affine(spacing_xyz=(0.8, 1.2, 2.5), angle_deg=10.0, origin=(-10.0, 5.0, 30.0)) -> np.ndarray:
    """Anisotropic voxels rotated about the world z axis."""
    t = np.radians(angle_deg)
    rot = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(spacing_xyz)
    a[:3, 3] = origin
    return a


def _write(path: Path, zyx: np.ndarray, affine: np.ndarray, qform_code=1, sform_code=2, trailing=0) -> Path:
    """Write a ``(Z, Y, X)`` array as NIfTI ``(i, j, k[, 1...])`` with explicit qform/sform codes."""
    data = np.asarray(zyx).transpose(2, 1, 0)
    data = data.reshape(data.shape + (1,) * trailing)
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=qform_code)
    img.set_sform(affine, code=sform_code)
    nib.save(img, str(path))
    return path


def _cube_label(shape=SHAPE_ZYX, dtype=np.int16) -> np.ndarray:
    label = np.zeros(shape, dtype=dtype)
    label[2:6, 3:7, 4:9] = 1
    label[3:5, 4:6, 5:7] = 2
    return label


def _shared_data() -> Path:
    env = os.environ.get("VOXSEG_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def test_read_volume_orders_axes_zyx_and_reports_spacing(tmp_path):
    rng = np.random.default_rng(0)
    zyx = rng.normal(size=SHAPE_ZYX).astype(np.float32)
    path = _write(tmp_path / "a.nii.gz", zyx, _affine())
    array, geometry = read_volume(path)
    assert array.shape == SHAPE_ZYX == geometry.shape
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, zyx)
    assert geometry.disk_shape == (12, 10, 8)
    np.testing.assert_allclose(geometry.spacing, (2.5, 1.2, 0.8), atol=1e-6)  # (sz, sy, sx)
    np.testing.assert_allclose(geometry.affine, _affine(), atol=1e-5)


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.int32])
def test_round_trip_keeps_affine_codes_dtype_and_values(tmp_path, dtype):
    affine = _affine()
    zyx = _cube_label(dtype=dtype)
    src = _write(tmp_path / "src.nii.gz", zyx, affine, qform_code=1, sform_code=2)
    array, geometry = read_volume(src, dtype=None)
    out = write_volume(array, geometry, tmp_path / "out.nii.gz")
    img = nib.load(str(out))
    assert img.get_data_dtype() == np.dtype(dtype)
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 2
    np.testing.assert_allclose(img.affine, nib.load(str(src)).affine, atol=1e-6)
    np.testing.assert_allclose(img.header.get_qform(), nib.load(str(src)).header.get_qform(), atol=1e-5)
    back, _ = read_volume(out, dtype=None)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, zyx)  # labels bit-exact


def test_round_trip_keeps_trailing_singleton_axis(tmp_path):
    src = _write(tmp_path / "ibsr_like.nii.gz", _cube_label(), _affine((0.9375, 1.5, 0.9375), 0.0), trailing=1)
    array, geometry = read_volume(src, dtype=None)
    assert array.shape == SHAPE_ZYX
    assert geometry.disk_shape == (12, 10, 8, 1)
    out = write_volume(array.astype(np.uint8), geometry, tmp_path / "out.nii.gz")
    img = nib.load(str(out))
    assert img.shape == (12, 10, 8, 1)
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(img.dataobj)[..., 0].transpose(2, 1, 0), _cube_label())


def test_write_multichannel_map_as_4d(tmp_path):
    src = _write(tmp_path / "ref.nii.gz", np.zeros(SHAPE_ZYX, np.float32), _affine())
    _, geometry = read_volume(src)
    probs = np.random.default_rng(1).random((3, *SHAPE_ZYX)).astype(np.float32)
    out = write_volume(probs, geometry, tmp_path / "probs.nii.gz")
    img = nib.load(str(out))
    assert img.shape == (12, 10, 8, 3)
    np.testing.assert_array_equal(np.asarray(img.dataobj).transpose(3, 2, 1, 0), probs)


def test_write_is_atomic_and_checks_shape(tmp_path):
    src = _write(tmp_path / "ref.nii.gz", np.zeros(SHAPE_ZYX, np.float32), _affine())
    _, geometry = read_volume(src)
    with pytest.raises(ValueError, match="shape"):
        write_volume(np.zeros((8, 10, 11)), geometry, tmp_path / "bad.nii.gz")
    write_volume(np.ones(SHAPE_ZYX, bool), geometry, tmp_path / "ok.nii")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.nii", "ref.nii.gz"]  # no temp file left


def test_read_geometry_matches_read_volume(tmp_path):
    src = _write(tmp_path / "a.nii.gz", _cube_label(), _affine())
    geometry = read_geometry(src)
    assert isinstance(geometry, ImageGeometry)
    _, full = read_volume(src)
    assert geometry.shape == full.shape and geometry.disk_shape == full.disk_shape
    np.testing.assert_array_equal(geometry.affine, full.affine)


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_volume(tmp_path / "missing.nii.gz")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(InputError, match="not a NIfTI"):
        read_volume(tmp_path / "a.txt")
    four_d = tmp_path / "4d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)), str(four_d))
    with pytest.raises(InputError, match="3-D"):
        read_volume(four_d)


def test_truncated_gzip_is_an_input_error(tmp_path):
    src = _write(tmp_path / "a.nii.gz", np.random.default_rng(2).normal(size=SHAPE_ZYX).astype(np.float32), _affine())
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated") as info:
        read_volume(src)
    assert str(info.value).startswith(str(src))


def test_real_ibsr_round_trip(tmp_path):
    src = _shared_data() / "ibsr18" / "Training_Set" / "IBSR_01" / "IBSR_01_seg.nii.gz"
    if not src.exists():
        pytest.skip(f"real data not found at {src} (set VOXSEG_SHARED_DATA)")
    label, geometry = read_volume(src, dtype=None)
    assert label.shape == (256, 128, 256) and geometry.disk_shape == (256, 128, 256, 1)
    out = write_volume(label, geometry, tmp_path / "seg.nii.gz")
    ref, copy = nib.load(str(src)), nib.load(str(out))
    assert copy.shape == ref.shape and copy.get_data_dtype() == ref.get_data_dtype()
    np.testing.assert_array_equal(copy.affine, ref.affine)
    np.testing.assert_array_equal(np.asarray(copy.dataobj), np.asarray(ref.dataobj))
