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
    if path.is_dir():
        raise InputError(path, "is a directory, not a NIfTI file")
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


#: Deflate (gzip) never compresses by more than about 1032:1, so a ``.nii.gz`` file cannot hold more bytes
#: than this many times its own size.
_MAX_GZIP_RATIO = 1032


def _spacing_check(path: Path, img: nib.Nifti1Image) -> None:
    """Refuse voxel sizes that are zero, negative or not finite, in the header's pixdim or in the affine."""
    pixdim = [float(v) for v in _raw_header(path, img)["pixdim"][1:4]]
    norms = np.sqrt((np.asarray(img.affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    if not all(np.isfinite(v) and v > 0 for v in pixdim):
        shown = ", ".join(f"{v:g}" for v in pixdim)
        raise InputError(path, f"invalid voxel spacing in the header: pixdim {shown} (each must be a positive number of mm)")
    if not np.isfinite(np.asarray(img.affine)).all() or not (norms > 0).all():
        shown = ", ".join(f"{v:g}" for v in norms)
        raise InputError(path, f"invalid voxel spacing in the header: the affine gives voxel sizes {shown} mm "
                               "(each must be a positive number)")


def _raw_header(path: Path, img: nib.Nifti1Image) -> nib.Nifti1Header:
    """The header as stored (nibabel silently replaces zero or negative pixdim values when it loads one)."""
    try:
        with nib.openers.ImageOpener(str(path)) as f:
            return type(img.header).from_fileobj(f, check=False)
    except Exception:  # already read once by nibabel; fall back to its (checked) copy
        return img.header


def _machine_memory() -> int | None:
    """Physical memory of this machine in bytes, or None where the system does not say."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def _size_check(path: Path, img: nib.Nifti1Image) -> None:
    """Refuse a header that claims more voxel data than the file can hold or this machine can load, before
    any voxel is read (a damaged header claiming e.g. 30000^3 voxels would otherwise exhaust the memory)."""
    shape = tuple(int(s) for s in img.shape)
    itemsize = img.header.get_data_dtype().itemsize
    claimed = int(np.prod(shape, dtype=np.float64)) * itemsize
    size = path.stat().st_size
    offset = int(img.header.get("vox_offset", 0) or 0)
    room = _MAX_GZIP_RATIO * size if path.name.endswith(".gz") else size - offset
    dims = "x".join(str(s) for s in shape)
    if claimed > room:
        raise InputError(path, f"the header claims {dims} voxels ({_gib(claimed)} of data) but the file "
                               f"({size} bytes) cannot hold that much: corrupt header or truncated file")
    memory = _machine_memory()
    if memory is not None and claimed > memory:
        raise InputError(path, f"the header claims {dims} voxels ({_gib(claimed)}), more than this machine's "
                               f"memory ({_gib(memory)})")


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.3g} GiB"


def read_geometry(path: str | Path) -> ImageGeometry:
    """Read only the header of a NIfTI file (fast; no voxel data); zero, negative or non-finite voxel sizes
    are refused."""
    path = Path(path)
    img = _load(path)
    _spatial_shape_check(path, tuple(img.shape))
    _spacing_check(path, img)
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
        InputError: missing, unreadable or truncated file, a folder, not a 3-D volume, a header claiming
            more voxel data than the file holds or the machine's memory, or zero, negative or non-finite
            voxel sizes.
    """
    path = Path(path)
    img = _load(path)
    _spatial_shape_check(path, tuple(img.shape))
    _spacing_check(path, img)
    _size_check(path, img)
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
