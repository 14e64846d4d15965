"""Model package files (:mod:`voxseg.infer.package`): the manifest, the member names a package may hold, and
reading a zip file or unpacked folder with every member checked against its manifest, or writing one.

:func:`read_package_members` reads every member into memory and checks it against the manifest before anything
is used: a member the manifest does not list or that voxseg does not know, a listed member that is missing, a
name that would escape the folder (absolute, ``..``, a link), a size other than the declared one or above
:data:`MAX_MEMBER_BYTES` (a zip bomb stops at the declared size), a checksum mismatch, a file that is not a zip
or is cut short, or a newer format version is an :class:`~voxseg.errors.InputError` naming the package.
"""
from __future__ import annotations

import hashlib
import json
import re
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from voxseg.errors import InputError

__all__ = ["PACKAGE_FORMAT", "PACKAGE_FORMAT_VERSION", "PACKAGE_KINDS", "MANIFEST_NAME", "MAX_MEMBER_BYTES",
           "is_package", "package_kind", "package_member_allowed", "read_package_members", "weights_name",
           "write_package_zip"]

PACKAGE_FORMAT = "voxseg-model-package"
PACKAGE_FORMAT_VERSION = 2
"""The newest format version this voxseg reads. A voxseg run is written as version 1 (readable by every voxseg
that reads packages), an nnU-Net model as version 2 (an older voxseg says to upgrade)."""
PACKAGE_KINDS = {"voxseg-run": 1, "nnunet": 2}
"""Manifest ``kind`` -> the format version it is written with."""
MANIFEST_NAME = "manifest.json"
MAX_MEMBER_BYTES = 4 * 2**30  # one member (the largest network's weights are far smaller)
_MAX_MANIFEST_BYTES = 2**20
_ROOT_FILES = ("plan.json", "fingerprint.json", "dataset.json", "split.json", "splits.json", "postprocessing.json",
               "labels.json", "model_card.md", "model_card.json")
_FOLD_FILES = ("plan.json", "split.json")
_WEIGHTS = re.compile(r"^(fold_\d+/)?checkpoint_(best|last|swa)\.safetensors$")
_FOLD_FILE = re.compile(r"^fold_\d+/(" + "|".join(re.escape(n) for n in _FOLD_FILES) + ")$")
_NNUNET_FILES = ("plans.json", "dataset.json", "nnunet.json", "model_card.md", "model_card.json")
_NNUNET_WEIGHTS = re.compile(r"^fold_(\d+|all)/checkpoint_(final|best|latest)\.safetensors$")
_REQUIRED = {"voxseg-run": ("plan.json",), "nnunet": ("plans.json", "dataset.json", "nnunet.json")}


def weights_name(which: str, prefix: str = "") -> str:
    """The member holding checkpoint ``which`` (``best``, ``last``, ``swa``) of the model at ``prefix``
    (``""`` or ``"fold_<k>/"``)."""
    return f"{prefix}checkpoint_{which}.safetensors"


def package_member_allowed(name: str, kind: str = "voxseg-run") -> bool:
    """Whether ``name`` is a member a package of ``kind`` may hold (besides the manifest)."""
    if kind == "nnunet":
        return name in _NNUNET_FILES or bool(_NNUNET_WEIGHTS.match(name))
    return name in _ROOT_FILES or bool(_WEIGHTS.match(name) or _FOLD_FILE.match(name))


def is_package(path: str | Path) -> bool:
    """Whether ``path`` is to be read as a package: a file (a run folder is a folder), a ``.zip`` name, or a folder
    holding ``manifest.json``."""
    path = Path(path)
    return path.is_file() or path.suffix.lower() == ".zip" or (path / MANIFEST_NAME).is_file()


def read_package_members(path: str | Path) -> tuple[dict, dict[str, bytes]]:
    """The manifest and every member's bytes (name -> content) of the package at ``path`` (a zip file or an
    unpacked folder), each member checked against the manifest (see the module docstring for what is refused).

    Raises:
        InputError: naming ``path``, for anything in it that is not what its manifest declares.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "model package not found")
    if path.is_dir():
        return _open_folder(path)
    with _zip_errors(path), zipfile.ZipFile(path) as archive:
        return _open_zip(path, archive)


@contextmanager
def _zip_errors(path: Path):
    """A zip file that cannot be read, as one InputError naming ``path``."""
    try:
        yield
    except zipfile.BadZipFile as exc:
        raise InputError(path, f"not a voxseg model package: not a zip file, or a cut-short one ({exc})") from None
    except (EOFError, zlib.error) as exc:
        raise InputError(path, f"not a voxseg model package: truncated or corrupt zip file ({exc})") from None
    except OSError as exc:
        raise InputError(path, f"cannot read the model package ({exc.strerror or exc})") from None


def package_kind(path: str | Path) -> str:
    """The ``kind`` of the package at ``path`` from its manifest alone (members are checked by
    :func:`open_package`).

    Raises:
        InputError: as :func:`open_package` for a missing, unreadable or malformed manifest.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "model package not found")
    if path.is_dir():
        file = path / MANIFEST_NAME
        if not file.is_file():
            raise InputError(path, f"not a voxseg model package (no {MANIFEST_NAME})")
        if file.stat().st_size > _MAX_MANIFEST_BYTES:
            raise InputError(path, f"{MANIFEST_NAME} is larger than {_MAX_MANIFEST_BYTES} bytes")
        raw = file.read_bytes()
    else:
        with _zip_errors(path), zipfile.ZipFile(path) as archive:
            if MANIFEST_NAME not in archive.namelist():
                raise InputError(path, f"not a voxseg model package (no {MANIFEST_NAME})")
            raw = _read_limited(archive, archive.getinfo(MANIFEST_NAME), _MAX_MANIFEST_BYTES, path)
    return _parse_manifest(path, raw).get("kind", "voxseg-run")


def write_package_zip(file, members: dict[str, bytes], kind: str = "voxseg-run") -> None:
    """Write ``members`` (name -> bytes) and their manifest (``kind``, its format version, each member's size and
    sha256) as a package zip into the open binary ``file``: weights stored, text compressed, in a fixed order."""
    from voxseg import __version__

    manifest = {"format": PACKAGE_FORMAT, "format_version": PACKAGE_KINDS[kind], "voxseg_version": __version__}
    if kind != "voxseg-run":  # a voxseg run's manifest stays as version 1 wrote it
        manifest["kind"] = kind
    manifest["members"] = [{"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                           for name, data in sorted(members.items())]
    with zipfile.ZipFile(file, "w") as archive:
        archive.writestr(MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode(),
                         compress_type=zipfile.ZIP_DEFLATED)
        for name, data in sorted(members.items()):
            kind_ = zipfile.ZIP_STORED if name.endswith(".safetensors") else zipfile.ZIP_DEFLATED
            archive.writestr(name, data, compress_type=kind_)


def _open_zip(path: Path, archive: zipfile.ZipFile) -> tuple[dict, dict[str, bytes]]:
    infos = {}
    for info in archive.infolist():
        _check_name(path, info.filename)
        if info.filename in infos:
            raise InputError(path, f"member {info.filename} appears twice")
        infos[info.filename] = info
    if MANIFEST_NAME not in infos:
        raise InputError(path, f"not a voxseg model package (no {MANIFEST_NAME})")
    manifest = _parse_manifest(path, _read_limited(archive, infos[MANIFEST_NAME], _MAX_MANIFEST_BYTES, path))
    declared = _declared_members(path, manifest)
    _check_same_names(path, declared, set(infos) - {MANIFEST_NAME})
    members = {}
    for name, (size, digest) in declared.items():
        if infos[name].file_size != size:
            raise InputError(path, f"member {name}: the zip says {infos[name].file_size} bytes, the manifest {size}")
        members[name] = _checked(path, name, _read_limited(archive, infos[name], size, path), size, digest)
    return manifest, members


def _open_folder(path: Path) -> tuple[dict, dict[str, bytes]]:
    root = path.resolve()
    names = set()
    for file in path.rglob("*"):
        if file.is_symlink():
            raise InputError(path, f"member {file.relative_to(path).as_posix()} is a link (it may point outside the "
                                   "package); a package holds plain files only")
        if file.is_file():
            names.add(file.relative_to(path).as_posix())
    if MANIFEST_NAME not in names:
        raise InputError(path, f"not a voxseg model package (no {MANIFEST_NAME})")
    for name in names:
        _check_name(path, name)
    manifest_file = path / MANIFEST_NAME
    if manifest_file.stat().st_size > _MAX_MANIFEST_BYTES:
        raise InputError(path, f"{MANIFEST_NAME} is larger than {_MAX_MANIFEST_BYTES} bytes")
    manifest = _parse_manifest(path, manifest_file.read_bytes())
    declared = _declared_members(path, manifest)
    _check_same_names(path, declared, names - {MANIFEST_NAME})
    members = {}
    for name, (size, digest) in declared.items():
        file = path / name
        if root not in file.resolve().parents:
            raise InputError(path, f"member {name} lies outside the package folder")
        if file.stat().st_size != size:
            raise InputError(path, f"member {name}: {file.stat().st_size} bytes, the manifest declares {size}")
        members[name] = _checked(path, name, file.read_bytes(), size, digest)
    return manifest, members


def _check_name(path: Path, name: str) -> None:
    """Refuse a member name that is absolute or climbs out of the package (``..``), in either separator."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if (not name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts
            or "\\" in name):
        raise InputError(path, f"member {name!r} has a path that escapes the package folder (absolute or '..')")


def _read_limited(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, path: Path) -> bytes:
    """At most ``limit + 1`` bytes of a member: a member that inflates beyond its size is never read whole."""
    if info.file_size > limit:
        raise InputError(path, f"member {info.filename} declares {info.file_size} bytes, more than the "
                               f"{limit} allowed")
    with archive.open(info) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise InputError(path, f"member {info.filename} inflates beyond {limit} bytes")
    return data


def _parse_manifest(path: Path, raw: bytes) -> dict:
    try:
        manifest = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(path, f"{MANIFEST_NAME} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != PACKAGE_FORMAT:
        raise InputError(path, f"not a voxseg model package ({MANIFEST_NAME} does not say format "
                               f"{PACKAGE_FORMAT!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InputError(path, f"{MANIFEST_NAME}: format_version must be a positive whole number, got {version!r}")
    if version > PACKAGE_FORMAT_VERSION:
        raise InputError(path, f"package format version {version} is newer than this voxseg reads (up to "
                               f"{PACKAGE_FORMAT_VERSION}; made by voxseg {manifest.get('voxseg_version', '?')}): "
                               "upgrade voxseg")
    kind = manifest.get("kind", "voxseg-run")
    if kind not in PACKAGE_KINDS:
        raise InputError(path, f"{MANIFEST_NAME}: unknown package kind {kind!r} (this voxseg reads "
                               f"{', '.join(PACKAGE_KINDS)})")
    return manifest


def _declared_members(path: Path, manifest: dict) -> dict[str, tuple[int, str]]:
    """name -> (size, sha256) as the manifest declares them; each name known and safe, each size within bounds."""
    kind = manifest.get("kind", "voxseg-run")
    entries = manifest.get("members")
    if not isinstance(entries, list):
        raise InputError(path, f"{MANIFEST_NAME} has no list of members")
    declared = {}
    for entry in entries:
        try:
            name, size, digest = entry["name"], entry["size"], entry["sha256"]
        except (TypeError, KeyError):
            raise InputError(path, f"{MANIFEST_NAME}: a member entry lacks name, size or sha256: {entry!r}") from None
        if not isinstance(name, str) or not isinstance(size, int) or not isinstance(digest, str):
            raise InputError(path, f"{MANIFEST_NAME}: malformed member entry {entry!r}")
        _check_name(path, name)
        if not package_member_allowed(name, kind):
            raise InputError(path, f"unknown member {name} (not a part of a{'n nnU-Net' if kind == 'nnunet' else ''} "
                                   "voxseg model package)")
        if not 0 <= size <= MAX_MEMBER_BYTES:
            raise InputError(path, f"member {name} declares {size} bytes (allowed: 0 to {MAX_MEMBER_BYTES})")
        declared[name] = (size, digest)
    for name in _REQUIRED[kind]:
        if name not in declared:
            raise InputError(path, f"missing member {name}")
    return declared


def _check_same_names(path: Path, declared: dict, present: set[str]) -> None:
    unknown = sorted(present - set(declared))
    if unknown:
        raise InputError(path, f"unknown member {unknown[0]} (not listed in {MANIFEST_NAME})")
    missing = sorted(set(declared) - present)
    if missing:
        raise InputError(path, f"missing member {missing[0]} (listed in {MANIFEST_NAME})")


def _checked(path: Path, name: str, data: bytes, size: int, digest: str) -> bytes:
    if len(data) != size:
        raise InputError(path, f"member {name}: {len(data)} bytes, the manifest declares {size}")
    if hashlib.sha256(data).hexdigest() != digest.lower():
        raise InputError(path, f"member {name}: checksum mismatch (sha256 differs from {MANIFEST_NAME}): "
                               "changed or damaged")
    return data
