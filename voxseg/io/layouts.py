"""Detect a dataset's layout on disk and list its cases (file names only, no voxel data).

Three layouts are recognised by :func:`load_dataset` (see ``docs/CONTRACTS.md``):

``'nnunet'``
    nnU-Net v2: ``dataset.json`` (``channel_names``, ``labels``, ``file_ending``),
    ``imagesTr/CASE_XXXX.nii.gz`` (one file per channel, ``XXXX`` = channel index) and
    ``labelsTr/CASE.nii.gz``; ``imagesTs/`` (with optional ``labelsTs/``) when there is no ``imagesTr/``.
``'paired'``
    ``images/NAME.nii.gz`` and ``labels/NAME.nii.gz`` with the same file names; one channel ``"image"``.
``'subject'``
    one folder per case: ``<case>/<case>_<channel>.nii.gz`` plus ``<case>/<case>_seg.nii.gz`` (BraTS) or
    ``<case>/<case>.nii.gz`` (channel ``"image"``) plus ``<case>_seg.nii.gz`` (IBSR). ``_label`` is accepted
    for ``_seg``. Channels are the suffixes sorted alphabetically.

The channel order of a dataset is explicit (``Dataset.channel_names``) and every ``Case.image_paths`` follows
it. A case that lacks a channel keeps the channels it has and lists the absent ones in
``Case.missing_channels``; :func:`voxseg.io.validate.validate_dataset` reports them and
:func:`voxseg.io.datasets.read_case` refuses them.
"""
from __future__ import annotations

import re
from pathlib import Path

from voxseg.errors import InputError
from voxseg.io.dataset_json import read_dataset_json
from voxseg.io.datasets import Case, Dataset
from voxseg.io.image import is_nifti, strip_nifti_suffix

__all__ = ["LAYOUTS", "LABEL_SUFFIXES", "load_dataset"]

LAYOUTS = ("nnunet", "paired", "subject")
#: File-name suffixes (after ``<case>_``) that mark the label file in the subject layout.
LABEL_SUFFIXES = ("seg", "label")
#: Channel name given to the only channel of layouts whose files carry no channel name.
_ANONYMOUS_CHANNEL = "image"
_EXPECTED_LAYOUTS = (
    "expected dataset.json + imagesTr/ (nnU-Net v2), images/ + labels/ (paired folders) "
    "or one folder per case with <case>_<channel>.nii.gz files (subject folders)"
)
_NNUNET_NAME = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


# ----------------------------------------------------------------------------------------------------------
# Listing helpers


def _nifti_files(folder: Path) -> list[Path]:
    """NIfTI files directly in ``folder``, sorted; hidden files (macOS ``._x.nii.gz`` forks) are skipped.

    A broken symbolic link, or a folder named like a NIfTI file, is listed (reading it then says which) rather
    than dropped, which would report its case as having a missing channel or no label.
    """
    return sorted(
        p for p in folder.iterdir()
        if (p.is_file() or p.is_dir() or (p.is_symlink() and not p.exists()))
        and is_nifti(p.name) and not p.name.startswith(".")
    )


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _stems(files: list[Path], folder: Path) -> dict[str, Path]:
    """``{name without .nii(.gz): path}``; two files with one stem (``x.nii`` and ``x.nii.gz``) are an error."""
    out: dict[str, Path] = {}
    for p in files:
        stem = strip_nifti_suffix(p.name)
        if stem in out:
            raise InputError(folder, f"two files for '{stem}': {out[stem].name} and {p.name}")
        out[stem] = p
    return out


# ----------------------------------------------------------------------------------------------------------
# nnU-Net v2


def _load_nnunet(root: Path, subset: str | None) -> Dataset:
    if not (root / "dataset.json").is_file():
        raise InputError(
            root, "found imagesTr/ or imagesTs/ but no dataset.json (nnU-Net v2 needs channel_names, labels, file_ending)"
        )
    channel_names, label_names, regions, region_labels = read_dataset_json(root)
    if subset is None:
        subset = "Tr" if (root / "imagesTr").is_dir() else "Ts"
    if subset not in ("Tr", "Ts"):
        raise ValueError(f"subset must be 'Tr' or 'Ts', got {subset!r}")
    images_dir = root / f"images{subset}"
    if not images_dir.is_dir():
        raise InputError(images_dir, "folder not found")
    cases = _group_nnunet_files(images_dir, channel_names)
    labels_dir = root / f"labels{subset}"
    _attach_labels(cases, labels_dir, channel_names)
    return Dataset(root, "nnunet", channel_names, _sorted_cases(cases, root), label_names, regions, region_labels)


def _group_nnunet_files(
    folder: Path, channel_names: list[str], files: list[Path] | None = None
) -> dict[str, Case]:
    """Group ``CASE_XXXX`` files into cases; ``channel_names[i]`` names index ``i``.

    Args:
        folder: where the files are (listed when ``files`` is None).
        channel_names: one name per channel index.
        files: the files to group, default all NIfTI files of ``folder``.

    Raises:
        InputError: a file without the ``_XXXX`` channel index, an index beyond ``channel_names``, or one
            channel in two files (``.nii`` and ``.nii.gz``).
    """
    by_case: dict[str, dict[int, Path]] = {}
    for p in _nifti_files(folder) if files is None else files:
        m = _NNUNET_NAME.match(strip_nifti_suffix(p.name))
        if m is None:
            raise InputError(p, "expected an nnU-Net image name CASE_XXXX (XXXX = 4-digit channel index)")
        index = int(m["channel"])
        if index >= len(channel_names):
            raise InputError(p, f"channel index {index} but dataset.json lists {len(channel_names)} channel(s) {channel_names}")
        channels = by_case.setdefault(m["case"], {})
        if index in channels:
            raise InputError(folder, f"two files for channel {index} of case {m['case']}: "
                             f"{channels[index].name} and {p.name}; keep one")
        channels[index] = p
    cases = {}
    for case_id, files in by_case.items():
        cases[case_id] = Case(
            case_id,
            [files[i] for i in sorted(files)],
            None,
            [channel_names[i] for i in range(len(channel_names)) if i not in files],
        )
    return cases


def _attach_labels(cases: dict[str, Case], labels_dir: Path, channel_names: list[str]) -> None:
    """Set ``label_path`` from ``labels_dir/<case>.nii(.gz)``; a label with no image becomes an image-less case.

    Either NIfTI ending is accepted whatever dataset.json's ``file_ending`` says (reporting a ``.nii`` label
    missing would send the user looking for a file that is there).
    """
    if not labels_dir.is_dir():
        return
    for case_id, p in _stems(_nifti_files(labels_dir), labels_dir).items():
        if case_id in cases:
            cases[case_id].label_path = p
        else:
            cases[case_id] = Case(case_id, [], p, list(channel_names))


def _sorted_cases(cases: dict[str, Case], root: Path) -> list[Case]:
    if not cases:
        raise InputError(root, "dataset has no cases (no NIfTI files found)")
    return [cases[k] for k in sorted(cases)]



# ----------------------------------------------------------------------------------------------------------
# Paired images/ + labels/


def _load_paired(root: Path) -> Dataset:
    images = _stems(_nifti_files(root / "images"), root / "images")
    cases = {stem: Case(stem, [p], None) for stem, p in images.items()}
    labels_dir = root / "labels"
    if labels_dir.is_dir():
        for stem, p in _stems(_nifti_files(labels_dir), labels_dir).items():
            if stem in cases:
                cases[stem].label_path = p
            else:
                cases[stem] = Case(stem, [], p, [_ANONYMOUS_CHANNEL])
    return Dataset(root, "paired", [_ANONYMOUS_CHANNEL], _sorted_cases(cases, root), None)


# ----------------------------------------------------------------------------------------------------------
# One folder per subject


def _split_subject_files(folder: Path, files: list[Path]) -> tuple[dict[str, Path], Path | None]:
    """``({channel: path}, label_path)`` for the NIfTI files of one subject folder.

    ``<case>_<suffix>`` gives channel ``suffix``; ``<case>`` alone gives channel ``"image"``; a file not
    prefixed by the folder name is named by its whole stem (``t1.nii.gz`` -> ``t1``).
    """
    case_id = folder.name
    channels: dict[str, Path] = {}
    label: Path | None = None
    for stem, p in _stems(files, folder).items():
        if stem == case_id:
            name = _ANONYMOUS_CHANNEL
        elif stem.startswith(case_id + "_"):
            name = stem[len(case_id) + 1 :]
        else:
            name = stem
        if name.lower() in LABEL_SUFFIXES:
            if label is not None:
                raise InputError(folder, f"two label files: {label.name} and {p.name}")
            label = p
        else:
            channels[name] = p
    return channels, label


def _load_subject(root: Path, folders: list[Path]) -> Dataset:
    per_case: dict[str, tuple[dict[str, Path], Path | None]] = {}
    for folder in folders:
        files = _nifti_files(folder)
        if files:
            per_case[folder.name] = _split_subject_files(folder, files)
    # The channel set is the union over cases, so a case lacking one is reported rather than hidden.
    channel_names = sorted({name for channels, _ in per_case.values() for name in channels})
    cases = {
        case_id: Case(
            case_id,
            [channels[n] for n in channel_names if n in channels],
            label,
            [n for n in channel_names if n not in channels],
        )
        for case_id, (channels, label) in per_case.items()
    }
    return Dataset(root, "subject", channel_names, _sorted_cases(cases, root), None)


# ----------------------------------------------------------------------------------------------------------
# Public API


def _detect_layout(root: Path) -> str | None:
    if (root / "dataset.json").is_file() or (root / "imagesTr").is_dir() or (root / "imagesTs").is_dir():
        return "nnunet"
    if (root / "images").is_dir():
        return "paired"
    if not _nifti_files(root) and any(_nifti_files(f) for f in _subfolders(root)):
        return "subject"
    return None


def load_dataset(root: str | Path, subset: str | None = None) -> Dataset:
    """Load a dataset, detecting its layout (``'nnunet'``, ``'paired'`` or ``'subject'``).

    Only file names are read here (no voxel data); use :func:`voxseg.io.validate.validate_dataset` to check
    the files themselves.

    Args:
        root: the dataset folder.
        subset: nnU-Net layout only: ``'Tr'`` (``imagesTr``/``labelsTr``) or ``'Ts'``; by default ``'Tr'``
            when ``imagesTr/`` exists, else ``'Ts'``.

    Returns:
        The :class:`Dataset`, cases sorted by id.

    Raises:
        InputError: folder not found, no layout recognised, no cases, or an unparsable ``dataset.json``.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "dataset folder not found" if not root.exists() else "not a folder; expected a dataset folder")
    layout = _detect_layout(root)
    if layout == "nnunet":
        return _load_nnunet(root, subset)
    if layout == "paired":
        return _load_paired(root)
    if layout == "subject":
        return _load_subject(root, _subfolders(root))
    raise InputError(root, f"no dataset layout recognised: {_EXPECTED_LAYOUTS}{_datasets_below(root)}")


def _datasets_below(root: Path) -> str:
    """``"; its subfolders A, B are datasets ..."``: the subfolders of ``root`` whose layout is recognised (file
    names only, as :func:`load_dataset` detects it), e.g. ``Training_Set/`` and ``Test_Set/`` of a download;
    empty when none is."""
    found = [(sub, layout) for sub in _subfolders(root) if (layout := _detect_layout(sub))]
    if not found:
        return ""
    listed = ", ".join(f"{sub.name}/ ({layout})" for sub, layout in found)
    return f"; its subfolders {listed} are datasets: give one of them, e.g. {found[0][0]}"

