"""The cache of preprocessed cases (and minicubes) in a run folder's ``preprocessed/``.

Each item is three files: ``ID.image.npy`` (float32 ``(C, Z, Y, X)``, opened memory-mapped), ``ID.label.npy``
(uint8 ``(Z, Y, X)``, read into memory) and ``ID.json`` (the settings it was made with, written last, so an
interrupted write is redone, never half read). An item made with other settings is made again.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from voxseg.data.preprocess import LabelMapping, PreprocessConfig, preprocess_case
from voxseg.data.sampling import minicube_partition, minicube_starts
from voxseg.io.datasets import Case, read_case
from voxseg.io.files import save_json_atomic, write_atomic

__all__ = ["PreparedCase", "cache_stamp", "cached_minicubes", "prepare_cases"]


@dataclass
class PreparedCase:
    """A preprocessed case.

    Attributes:
        case_id: identifier.
        image: ``(C, Z, Y, X)`` float32, normalised; read-only and memory-mapped when it comes from the
            run's cache (patches are copied out, never written into it).
        label: ``(Z, Y, X)`` uint8 consecutive classes (0 = background), or None; treat it as read-only too.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None


def cache_stamp(config: PreprocessConfig, label_values: list[int]) -> str:
    """The settings a cached case was made with (a case cached with others is made again)."""
    return json.dumps({"preprocess": config.to_dict(), "labels": label_values}, sort_keys=True)


def prepare_cases(cases: list[Case], config: PreprocessConfig, mapping: LabelMapping, cache_dir: Path,
                  progress: bool = True) -> list[PreparedCase]:
    """Read and preprocess cases, reusing the cache in ``cache_dir`` when the settings are unchanged.

    Cached images are uncompressed ``.npy`` files opened memory-mapped (read-only): the cases of a dataset
    larger than RAM are paged in as patches are drawn, instead of all being held in memory (a BraTS case is
    ~50 MB preprocessed, a thousand of them more than most machines have). Labels (uint8, 1/16 of the bytes)
    are held in memory. Each mapped case keeps a file open: the soft open-file limit is raised towards the
    hard one, and cases beyond it are held in memory with a warning. The settings file is written last, so
    an interrupted write is redone, never half read. (``--channels`` subsets of channels that are not
    consecutive copy the cases they use into memory; ``--minicubes`` are cached and mapped the same way.)

    Returns:
        cases with ``(C, Z, Y, X)`` float32 images and ``(Z, Y, X)`` uint8 consecutive labels.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    stamp = cache_stamp(config, mapping.values)
    _raise_open_file_limit(len(cases) + 1024)
    reader = _CacheReader(cache_dir, stamp, "cases")
    prepared = []
    for case in tqdm(cases, desc="preprocess", unit="case", disable=None if progress else True):
        _convert_old_cache(cache_dir, case.case_id, stamp)
        cached = reader.load(case.case_id)
        if cached is None:
            image, label, geometry = read_case(case, with_label=True)
            consecutive = mapping.to_consecutive(label) if label is not None else None
            result = preprocess_case(image, geometry.spacing, config, label=consecutive, affine=geometry.affine)
            _write_cached(cache_dir, case.case_id, stamp, result.image, result.label, result.record.to_dict())
            del image, result  # what training reads is the file just written (mapped), not this copy
            cached = reader.load(case.case_id)
        prepared.append(cached)
    return prepared


def cached_minicubes(cases: list[PreparedCase], cube: list[int], context: int, cache_dir: Path, stamp: str
                     ) -> list[PreparedCase]:
    """Each case's fixed partition into cubes (with context), as cases of their own (Buchwald et al. 2022).

    The cubes are cached in ``cache_dir`` as ``.npy`` files opened memory-mapped, like the cases (one case's cubes
    are in memory at a time); ``stamp`` names the preprocessing they come from (:func:`cache_stamp`), so other
    settings, or another ``cube`` (``[cz, cy, cx]`` voxels) or ``context`` (voxels), remake them.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    stamp = json.dumps({"cases": stamp, "cube": list(cube), "context": context}, sort_keys=True)
    counts = [len(minicube_starts(case.image.shape[1:], cube)) for case in cases]
    _raise_open_file_limit(len(cases) + sum(counts) + 1024)  # the mapped cases hold one file each too
    reader = _CacheReader(cache_dir, stamp, "minicubes")
    out = []
    for case, n_cubes in zip(cases, counts):
        ids = [f"{case.case_id}#cube{k}" for k in range(n_cubes)]
        if not all(_is_cached(cache_dir, cube_id, stamp) for cube_id in ids):
            images = minicube_partition(case.image, None, cube, context)
            labels = minicube_partition(case.label[None], None, cube, context)
            for cube_id, (img, _), (lbl, _) in zip(ids, images, labels):
                _write_cached(cache_dir, cube_id, stamp, img, lbl[0])
            del images, labels
        out.extend(reader.load(cube_id) for cube_id in ids)
    return out


def _cache_files(cache_dir: Path, case_id: str) -> tuple[Path, Path, Path]:
    """``(image .npy, label .npy, settings .json)`` of one cached case."""
    return (cache_dir / f"{case_id}.image.npy", cache_dir / f"{case_id}.label.npy", cache_dir / f"{case_id}.json")


def _save_atomic(array: np.ndarray, path: Path) -> None:
    write_atomic(path, lambda f: np.save(f, array, allow_pickle=False))


def _convert_old_cache(cache_dir: Path, case_id: str, stamp: str) -> None:
    """A ``<case>.npz`` left by older voxseg versions (one compressed file per case) with the same settings
    becomes the current .npy files, without preprocessing the case again."""
    old = cache_dir / f"{case_id}.npz"
    if not old.exists():
        return
    with np.load(old, allow_pickle=False) as npz:
        if str(npz["stamp"]) != stamp:
            return
        _write_cached(cache_dir, case_id, stamp, npz["image"], npz["label"] if npz["label"].size else None,
                      json.loads(str(npz["record"])))
    old.unlink()


def _load_cached(cache_dir: Path, case_id: str, stamp: str, mapped: bool = True) -> PreparedCase | None:
    """The cached case, its image memory-mapped read-only (``mapped``; the label, 1/16 of the bytes, is read
    into memory so each case holds one open file); None when absent, partial or made with other settings.

    Raises:
        OSError: other than a missing file, e.g. too many open files (EMFILE).
    """
    image_path, label_path, meta_path = _cache_files(cache_dir, case_id)
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("stamp") != stamp:
            return None
        image = np.load(image_path, mmap_mode="r" if mapped else None, allow_pickle=False)
        label = np.load(label_path, allow_pickle=False) if meta.get("has_label") else None
    except (FileNotFoundError, ValueError):
        return None
    return PreparedCase(case_id, image, label)


def _is_cached(cache_dir: Path, item_id: str, stamp: str) -> bool:
    """Whether the item is cached with these settings (its settings file, written last, names them)."""
    try:
        return json.loads(_cache_files(cache_dir, item_id)[2].read_text()).get("stamp") == stamp
    except (FileNotFoundError, ValueError):
        return False


def _write_cached(cache_dir: Path, item_id: str, stamp: str, image: np.ndarray, label: np.ndarray | None,
                  record: dict | None = None) -> None:
    """Cache one item (a case, or a minicube): the arrays first, the settings file that validates them last, so an
    interrupted write is redone, never half read."""
    image_path, label_path, meta_path = _cache_files(cache_dir, item_id)
    meta_path.unlink(missing_ok=True)
    _save_atomic(np.ascontiguousarray(image, dtype=np.float32), image_path)
    if label is not None:
        _save_atomic(np.ascontiguousarray(label), label_path)
    meta = {"stamp": stamp, "has_label": label is not None}
    save_json_atomic(meta if record is None else {**meta, "record": record}, meta_path)


class _CacheReader:
    """Reads cached items memory-mapped until the process runs out of open files (each mapped item keeps one open),
    then into memory, with one warning."""

    def __init__(self, cache_dir: Path, stamp: str, what: str):
        self.cache_dir, self.stamp, self.what, self.mapped = cache_dir, stamp, what, True

    def load(self, item_id: str) -> PreparedCase | None:
        """The cached item, or None when absent, partial or made with other settings."""
        try:
            return _load_cached(self.cache_dir, item_id, self.stamp, self.mapped)
        except OSError as exc:  # out of open files even after raising the limit: hold the rest in memory
            if not self.mapped:
                raise
            self.mapped = False
            warnings.warn(f"{self.cache_dir}: cannot map more cached {self.what} ({exc.strerror}); the rest are held "
                          "in memory (raise 'ulimit -n' to map them all)")
            return _load_cached(self.cache_dir, item_id, self.stamp, self.mapped)


def _raise_open_file_limit(wanted: int) -> None:
    """Raise the soft limit of open files towards the hard one (a mapped case keeps one open)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    except (ImportError, ValueError, OSError):  # not POSIX, or not allowed: keep what there is
        pass
