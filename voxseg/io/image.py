"""Read and write NIfTI volumes with their full geometry.

Arrays inside voxseg are in ``(Z, Y, X)`` order (the reverse of NIfTI's ``(i, j, k)`` voxel
order, the same as SimpleITK and PyTorch use); spacings are ``(sz, sy, sx)`` in millimetres.
A volume read here and written back with :func:`write_volume` keeps the input's on-disk shape
(including trailing singleton axes such as IBSR's ``256x128x256x1``), affine, qform and sform.
"""
from __future__ import annotations

import os
import zlib
import gzip
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from voxseg.errors import InputError

__all__ = ["ImageGeometry", "read_volume", "read_geometry", "write_volume", "is_nifti", "strip_nifti_suffix"]

_NIFTI_SUFFIXES = (".nii.gz", ".nii")


def is_nifti(path: str | Path) -> bool:
    """True when the file name ends in ``.nii`` or ``.nii.gz``."""
    return str(path).endswith(_NIFTI_SUFFIXES)


def strip_nifti_suffix(name: str) -> str:
    """``'case_0000.nii.gz' -> 'case_0000'``."""
    for suffix in _NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass
class ImageGeometry:
    """Where a volume sits in the world, enough to write a result in the very same geometry.

    Attributes:
        affine: ``(4, 4)`` voxel ``(i, j, k)`` -> world (mm) matrix as nibabel reports it.
        disk_shape: the shape stored in the file, e.g. ``(256, 128, 256, 1)``.
        header: the NIfTI header (kept to carry qform/sform codes, units and pixdim).
    """

    affine: np.ndarray
    disk_shape: tuple[int, ...]
    header: nib.Nifti1Header = field(repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape in voxseg order ``(Z, Y, X)``."""
        i, j, k = self.disk_shape[:3]
        return (k, j, i)

    @property
    def orientation(self) -> str | None:
        """Axis codes of the voxel axes ``(i, j, k)``, e.g. ``"RAS"`` (see :func:`orientation_code`)."""
        return orientation_code(self.affine)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size ``(sz, sy, sx)`` in mm, from the affine's column norms."""
        norms = np.sqrt((np.asarray(self.affine)[:3, :3] ** 2).sum(axis=0))
        return (float(norms[2]), float(norms[1]), float(norms[0]))


def orientation_code(affine: np.ndarray) -> str | None:
    """Axis codes of the voxel axes ``(i, j, k)`` of a NIfTI affine, e.g. ``"RAS"``: ``i`` runs towards the
    Right, ``j`` Anterior, ``k`` Superior; None when an axis has no direction (a degenerate affine)."""
    codes = nib.aff2axcodes(np.asarray(affine, dtype=np.float64))
    return None if any(c is None for c in codes) else "".join(codes)


def _load(path: Path) -> nib.Nifti1Image:
    if not path.exists():
        if path.is_symlink():
            raise InputError(path, f"broken symbolic link (its target {os.readlink(path)} does not exist)")
        raise InputError(path, "file not found")
    if not is_nifti(path):
        raise InputError(path, "not a NIfTI file (expected .nii or .nii.gz)")
    if path.name.endswith(".nii") and _starts_with(path, b"\x1f\x8b"):
        raise InputError(path, "gzip-compressed data in a .nii file: rename it to .nii.gz")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for broken headers
        raise InputError(path, f"unreadable NIfTI header ({type(exc).__name__}: {exc})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(path, "not a NIfTI-1/2 image")
    return img


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


def _spatial_shape_check(path: Path, shape: tuple[int, ...]) -> None:
    if len(shape) < 3 or any(s != 1 for s in shape[3:]):
        raise InputError(path, f"expected a 3-D volume (trailing singleton axes allowed), got shape {shape}")


def read_geometry(path: str | Path) -> ImageGeometry:
    """Read only the header of a NIfTI file (fast; no voxel data)."""
    path = Path(path)
    img = _load(path)
    _spatial_shape_check(path, tuple(img.shape))
    return ImageGeometry(np.array(img.affine, dtype=np.float64), tuple(int(s) for s in img.shape), img.header.copy())


def read_volume(path: str | Path, dtype: type | np.dtype | None = np.float32) -> tuple[np.ndarray, ImageGeometry]:
    """Read a 3-D NIfTI volume.

    Args:
        path: ``.nii`` or ``.nii.gz`` file; 4-D files are accepted when the extra axes are singletons.
        dtype: dtype of the returned array (scaling by ``scl_slope``/``scl_inter`` applied);
            ``None`` keeps the on-disk dtype where nibabel allows it.

    Returns:
        ``(array, geometry)`` with ``array`` of shape ``(Z, Y, X)``.

    Raises:
        InputError: missing, unreadable or truncated file, or not a 3-D volume.
    """
    path = Path(path)
    img = _load(path)
    _spatial_shape_check(path, tuple(img.shape))
    try:
        if dtype is None:
            data = np.asanyarray(img.dataobj)
        else:
            data = img.get_fdata(dtype=np.float32) if np.dtype(dtype).kind == "f" else np.asanyarray(img.dataobj)
            data = data.astype(dtype, copy=False)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise InputError(path, f"truncated or corrupt voxel data ({type(exc).__name__}: {exc})") from None
    data = data.reshape(data.shape[:3])
    geometry = ImageGeometry(np.array(img.affine, dtype=np.float64), tuple(int(s) for s in img.shape), img.header.copy())
    return np.ascontiguousarray(data.transpose(2, 1, 0)), geometry


def write_volume(array: np.ndarray, geometry: ImageGeometry, path: str | Path, dtype: type | np.dtype | None = None) -> Path:
    """Write a ``(Z, Y, X)`` array (or ``(C, Z, Y, X)``, written as a 4-D file) in ``geometry``.

    The file is written to a temporary name beside ``path`` and renamed, so an error or Ctrl-C never
    leaves a half-written file. Affine, qform/sform (with their codes), pixdim and the on-disk shape of
    the reference (including trailing singleton axes) are kept; scaling is reset to identity.

    Args:
        array: ``(Z, Y, X)`` matching ``geometry.shape``, or ``(C, Z, Y, X)`` for per-channel maps.
        geometry: from :func:`read_volume` / :func:`read_geometry` of the reference image.
        path: output ``.nii.gz`` or ``.nii``.
        dtype: on-disk dtype; defaults to the array's dtype.
    """
    path = Path(path)
    array = np.asarray(array)
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    if array.dtype == np.int64:
        array = array.astype(np.int32)
    if array.shape[-3:] != geometry.shape:
        raise ValueError(f"array spatial shape {array.shape[-3:]} != reference {geometry.shape}")
    if array.ndim == 3:
        data = array.transpose(2, 1, 0).reshape(geometry.disk_shape)
    elif array.ndim == 4:
        data = array.transpose(3, 2, 1, 0)
    else:
        raise ValueError(f"expected a (Z, Y, X) or (C, Z, Y, X) array, got shape {array.shape}")
    header = geometry.header.copy()
    header.set_data_dtype(data.dtype)
    img = nib.Nifti1Image(data, geometry.affine, header=header)
    img.set_qform(geometry.header.get_qform(), code=int(geometry.header["qform_code"]))
    img.set_sform(geometry.header.get_sform(), code=int(geometry.header["sform_code"]))
    img.header.set_slope_inter(1.0, 0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if str(path).endswith(".gz") else ".nii"
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")
    try:
        nib.save(img, str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
