"""Find the cases of a dataset on disk, whatever layout it came in, and read them.

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
``Case.missing_channels``; :func:`voxseg.io.validate.validate_dataset` reports them and :func:`read_case`
refuses them.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxseg.errors import InputError
from voxseg.io.image import ImageGeometry, is_nifti, read_volume, strip_nifti_suffix

__all__ = [
    "Case",
    "Dataset",
    "LAYOUTS",
    "LABEL_SUFFIXES",
    "load_dataset",
    "find_prediction_cases",
    "read_case",
    "read_dataset_labels",
    "label_to_int",
]

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


@dataclass
class Case:
    """One case: its image files in channel order and its label file.

    Attributes:
        case_id: unique name of the case within its dataset (e.g. ``'hippocampus_001'``).
        image_paths: one file per channel, in the dataset's channel order; channels listed in
            ``missing_channels`` are left out.
        label_path: the label map, or ``None`` when the case has none (test data, or a missing file).
        missing_channels: names of the dataset's channels that this case has no file for.
    """

    case_id: str
    image_paths: list[Path]
    label_path: Path | None = None
    missing_channels: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready dict (paths as strings)."""
        return {
            "case_id": self.case_id,
            "image_paths": [str(p) for p in self.image_paths],
            "label_path": None if self.label_path is None else str(self.label_path),
            "missing_channels": list(self.missing_channels),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Case:
        """Inverse of :meth:`to_dict`."""
        return cls(
            case_id=d["case_id"],
            image_paths=[Path(p) for p in d["image_paths"]],
            label_path=None if d.get("label_path") is None else Path(d["label_path"]),
            missing_channels=list(d.get("missing_channels", [])),
        )


@dataclass
class Dataset:
    """A set of cases sharing one channel order.

    Attributes:
        root: the folder the dataset was loaded from.
        layout: one of :data:`LAYOUTS`.
        channel_names: channel names in the order the network sees them.
        cases: sorted by ``case_id``.
        label_names: ``{value: name}`` from ``dataset.json`` (nnU-Net layout), else ``None``. Every value the
            labels may hold is a key (0 always); a value that only occurs in regions is named ``label_<v>``.
        label_regions: ``{region name: values}`` for a region-based ``dataset.json`` (entries whose value is a
            list, e.g. ``"whole tumor": [1, 2, 3]``), in the file's order; else ``None``.
        region_labels: ``dataset.json`` ``regions_class_order`` (the label painted per region), if given.
    """

    root: Path
    layout: str
    channel_names: list[str]
    cases: list[Case]
    label_names: dict[int, str] | None = None
    label_regions: dict[str, list[int]] | None = None
    region_labels: list[int] | None = None

    def to_dict(self) -> dict:
        """JSON-ready dict; label keys become strings as JSON requires."""
        return {
            "root": str(self.root),
            "layout": self.layout,
            "channel_names": list(self.channel_names),
            "cases": [c.to_dict() for c in self.cases],
            "label_names": None if self.label_names is None else {str(k): v for k, v in self.label_names.items()},
            "label_regions": self.label_regions,
            "region_labels": self.region_labels,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Dataset:
        """Inverse of :meth:`to_dict`."""
        names = d.get("label_names")
        return cls(
            root=Path(d["root"]),
            layout=d["layout"],
            channel_names=list(d["channel_names"]),
            cases=[Case.from_dict(c) for c in d["cases"]],
            label_names=None if names is None else {int(k): v for k, v in names.items()},
            label_regions=d.get("label_regions"),
            region_labels=d.get("region_labels"),
        )

    def case(self, case_id: str) -> Case:
        """The case named ``case_id`` (``KeyError`` if absent)."""
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise KeyError(case_id)


# ----------------------------------------------------------------------------------------------------------
# Listing helpers


def _nifti_files(folder: Path) -> list[Path]:
    """NIfTI files directly in ``folder``, sorted; hidden files (macOS ``._x.nii.gz`` forks) are skipped.

    A broken symbolic link is listed (reading it then names the missing target) rather than dropped, which
    would report its case as having a missing channel or no label.
    """
    return sorted(
        p for p in folder.iterdir()
        if (p.is_file() or (p.is_symlink() and not p.exists())) and is_nifti(p.name) and not p.name.startswith(".")
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


def _read_dataset_json(root: Path) -> tuple[list[str], dict[int, str] | None, dict[str, list[int]] | None,
                                           list[int] | None]:
    """``(channel_names in index order, label_names, label_regions, region_labels)`` from ``root/dataset.json``.

    ``file_ending`` must name a NIfTI ending; files are then matched with either NIfTI ending.
    """
    path = root / "dataset.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot parse dataset.json ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict):
        raise InputError(path, "dataset.json must hold a JSON object with channel_names, labels and file_ending")
    # nnU-Net v1 called the channels "modality"; accept it so old datasets load unchanged.
    channels = meta.get("channel_names", meta.get("modality"))
    if not isinstance(channels, dict) or not channels:
        raise InputError(path, 'missing "channel_names" (expected e.g. {"0": "T1", "1": "T2"})')
    try:
        indexed = sorted((int(k), str(v)) for k, v in channels.items())
    except ValueError:
        raise InputError(path, f'"channel_names" keys must be channel indices "0", "1", ...; got {list(channels)}') from None
    if [i for i, _ in indexed] != list(range(len(indexed))):
        raise InputError(path, f'"channel_names" indices must be 0..{len(indexed) - 1}; got {[i for i, _ in indexed]}')
    names = [name for _, name in indexed]
    lower = [n.lower() for n in names]  # channel subsets (--channels t1) match names in any case
    twice = sorted({n for n in lower if lower.count(n) > 1})
    if twice:
        where = ", ".join(f'"{n}" (channels {", ".join(str(i) for i, m in indexed if m.lower() == n)})' for n in twice)
        raise InputError(path, f'"channel_names" gives one name to several channels: {where}; each channel needs its own name')
    label_names, regions = _parse_labels(path, meta.get("labels"))
    order = meta.get("regions_class_order")
    if order is not None and (not isinstance(order, list)
                              or not all(isinstance(v, int) and not isinstance(v, bool) for v in order)):
        raise InputError(path, f'"regions_class_order" must be a list of label values, got {order!r}')
    if order is not None and not regions:
        raise InputError(path, '"regions_class_order" is given but "labels" defines no regions (lists of values)')
    ending = str(meta.get("file_ending", ".nii.gz"))
    if not is_nifti("x" + ending):
        raise InputError(path, f'file_ending "{ending}" is not supported (voxseg reads .nii and .nii.gz)')
    return names, label_names, regions, order


def _parse_labels(path: Path, labels: object) -> tuple[dict[int, str] | None, dict[str, list[int]] | None]:
    """``(value -> name, region name -> values)`` from nnU-Net v2 ``labels``.

    ``{name: value}`` names a label value. When any entry lists values (``"whole tumor": [1, 2, 3]``) the
    dataset is region-based, as nnU-Net reads it: every entry but background is a region, in the file's
    order (a single value is a region of one value). A value that only occurs in regions is named
    ``label_<v>``: a region's name is not the name of each of its values.
    """
    if labels is None:
        return None, None
    if not isinstance(labels, dict):
        raise InputError(path, '"labels" must be an object such as {"background": 0, "tumour": 1}')
    out: dict[int, str] = {}
    regions: dict[str, list[int]] = {}
    for name, value in labels.items():
        if isinstance(value, list):
            if not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise InputError(path, f'region "{name}" must list integer label values, got {value!r}')
            regions[str(name)] = [int(v) for v in value]
            continue
        try:
            # nnU-Net v1 wrote {"0": "background"}; recognise it by its numeric keys.
            key, text = (int(value), str(name)) if not str(name).lstrip("-").isdigit() else (int(name), str(value))
        except (TypeError, ValueError):
            raise InputError(path, f'label "{name}" has a non-integer value {value!r}') from None
        out[key] = text
        regions[text] = [key]
    if not any(isinstance(v, list) for v in labels.values()):  # plain labels
        regions = {}
    regions = {n: vs for n, vs in regions.items() if vs != [0]}
    for values in regions.values():
        for v in values:
            out.setdefault(v, f"label_{v}")
    # nnU-Net requires "background": 0; without it every case's background would be an "unexpected value".
    out.setdefault(0, "background")
    return out, regions or None


def read_dataset_labels(root: str | Path) -> tuple[dict[int, str] | None, dict[str, list[int]] | None,
                                                   list[int] | None] | None:
    """``(label_names, label_regions, region_labels)`` from ``root/dataset.json`` as :class:`Dataset` holds
    them, or None when there is no dataset.json (e.g. to name what ``voxseg evaluate`` scores in labelsTr/).

    Raises:
        InputError: a dataset.json that cannot be read (one line naming it).
    """
    root = Path(root)
    if not (root / "dataset.json").is_file():
        return None
    _, names, regions, paint = _read_dataset_json(root)
    return names, regions, paint


def _load_nnunet(root: Path, subset: str | None) -> Dataset:
    if not (root / "dataset.json").is_file():
        raise InputError(
            root, "found imagesTr/ or imagesTs/ but no dataset.json (nnU-Net v2 needs channel_names, labels, file_ending)"
        )
    channel_names, label_names, regions, region_labels = _read_dataset_json(root)
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
    raise InputError(root, f"no dataset layout recognised: {_EXPECTED_LAYOUTS}")


def _match_channels(found: list[str], expected: list[str], where: Path) -> list[int]:
    """Indices into ``found`` that put it in ``expected`` order; names compare case-insensitively.

    Raises:
        InputError: naming ``where`` and the missing / extra channel names.
    """
    lower = {n.lower(): i for i, n in enumerate(found)}
    missing = [n for n in expected if n.lower() not in lower]
    wanted = {n.lower() for n in expected}
    extra = [n for n in found if n.lower() not in wanted]
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"extra {', '.join(extra)}"] if extra else [])
        raise InputError(
            where,
            f"channels do not match the model: {'; '.join(parts)} "
            f"(found {', '.join(found) or 'none'}; the model expects {', '.join(expected)})",
        )
    return [lower[n.lower()] for n in expected]


def _order_case(case: Case, found: list[str], anonymous: bool, channel_names: list[str], where: Path) -> Case:
    """Return ``case`` with its images in model order.

    ``anonymous`` files carry no channel name (plain files, nnU-Net indices without ``dataset.json``): only
    their count must match, position ``i`` being model channel ``i``.
    """
    if anonymous:
        if len(found) == len(channel_names):
            return Case(case.case_id, list(case.image_paths), case.label_path)
        # Name the positions by the model's names so the message says what is absent or surplus.
        found = [channel_names[i] if i < len(channel_names) else f"channel {i}" for i in range(len(found))]
    order = _match_channels(found, channel_names, where)
    return Case(case.case_id, [case.image_paths[i] for i in order], case.label_path)


def _prediction_cases_from_dataset(ds: Dataset, channel_names: list[str]) -> list[Case]:
    out = []
    # "paired" has one unnamed channel; nnU-Net files are numbered, so only the count is certain.
    anonymous = ds.layout == "paired" or (ds.channel_names == [_ANONYMOUS_CHANNEL])
    for case in ds.cases:
        if not case.image_paths:
            continue  # a label with no image: nothing to predict
        where = case.image_paths[0].parent
        if ds.layout == "nnunet" and not case.missing_channels and len(ds.channel_names) == len(channel_names):
            # Files are ordered by index; dataset.json names may differ from the model's (e.g. "T1" vs "t1w").
            out.append(Case(case.case_id, list(case.image_paths), case.label_path))
            continue
        present = [n for n in ds.channel_names if n not in case.missing_channels]
        out.append(_order_case(case, present, anonymous and not case.missing_channels, channel_names, where))
    if not out:
        raise InputError(ds.root, "no images to predict")
    return out


def _prediction_cases_from_files(folder: Path, files: list[Path], channel_names: list[str]) -> list[Case]:
    """Cases from a flat folder of NIfTI files (one case folder, or many single-file cases)."""
    stems = _stems(files, folder)
    if all(_NNUNET_NAME.match(s) for s in stems):
        # nnU-Net-named files: the index is the channel; names come from the model.
        indices = {int(_NNUNET_NAME.match(s)["channel"]) for s in stems}
        names = channel_names + [f"channel {i}" for i in range(len(channel_names), max(indices) + 1)]
        cases = _group_nnunet_files(folder, names, files=files)
        out = []
        for case in sorted(cases.values(), key=lambda c: c.case_id):
            present = [n for n in names if n not in case.missing_channels]
            out.append(_order_case(case, present, False, channel_names, folder))
        return out
    if all(s == folder.name or s.startswith(folder.name + "_") for s in stems):
        # One subject folder, e.g. Brats18_x/Brats18_x_{flair,t1,t1ce,t2}.nii.gz.
        channels, label = _split_subject_files(folder, files)
        found = sorted(channels)
        anonymous = found == [_ANONYMOUS_CHANNEL]
        # A folder "hippocampus" of files "hippocampus_001..." is many single-channel cases, not one case
        # with channels "001", ...: with a one-channel model, prefer that reading unless the name matches.
        if len(channel_names) > 1 or anonymous or [n.lower() for n in found] == [channel_names[0].lower()]:
            case = Case(folder.name, [channels[n] for n in found], label)
            return [_order_case(case, found, anonymous, channel_names, folder)]
    if len(channel_names) == 1:
        return _single_file_cases(stems)
    raise InputError(
        folder,
        f"cannot tell which files belong together: the model expects {len(channel_names)} channels "
        f"({', '.join(channel_names)}); give one folder per case (<case>_<channel>.nii.gz) or nnU-Net names CASE_XXXX",
    )


def _nnunet_case_of(path: Path) -> str | None:
    m = _NNUNET_NAME.match(strip_nifti_suffix(path.name))
    return None if m is None else m["case"]


def _single_file_cases(stems: dict[str, Path]) -> list[Case]:
    """One case per file; ``<name>_seg`` / ``<name>_label`` files become the label of ``<name>``."""
    labels, images = {}, {}
    for stem, p in stems.items():
        base, _, suffix = stem.rpartition("_")
        if suffix.lower() in LABEL_SUFFIXES and base in stems:
            labels[base] = p
        else:
            images[stem] = p
    return [Case(stem, [p], labels.get(stem)) for stem, p in sorted(images.items())]


def find_prediction_cases(path: str | Path, channel_names: list[str]) -> list[Case]:
    """Find the cases to predict in ``path``, with images in the model's channel order.

    ``path`` may be:

    * one NIfTI file: a single-channel case, or an nnU-Net ``CASE_0000`` file whose ``CASE_0001``... siblings
      hold the other channels;
    * a case folder: ``<case>/<case>_<channel>.nii.gz`` (plus an optional label), or ``CASE_XXXX`` files;
    * a dataset folder: any layout :func:`load_dataset` knows (nnU-Net: ``imagesTs`` when present, else
      ``imagesTr``), or a flat folder of single-channel NIfTI files or nnU-Net-named channel files.

    Channel names are matched case-insensitively. Files that carry no channel name (single files, ``images/``,
    nnU-Net indices) must simply be as many as ``channel_names``. Labels are attached when found, never required.

    Args:
        path: file or folder.
        channel_names: the model's channels in training order, e.g. ``['flair', 't1', 't1ce', 't2']``.

    Returns:
        Cases sorted by id, ``image_paths`` in ``channel_names`` order.

    Raises:
        InputError: path not found, nothing to predict, or channels that do not match ``channel_names``
            (naming the folder and the missing / extra channels).
    """
    path = Path(path)
    channel_names = list(channel_names)
    if not channel_names:
        raise ValueError("channel_names must not be empty")
    if not path.exists():
        raise InputError(path, "not found; expected a NIfTI file, a case folder or a dataset folder")
    if path.is_file():
        if not is_nifti(path.name):
            raise InputError(path, "not a NIfTI file (expected .nii or .nii.gz)")
        m = _NNUNET_NAME.match(strip_nifti_suffix(path.name))
        if m is not None and m["channel"] == "0000":
            siblings = [p for p in _nifti_files(path.parent) if _nnunet_case_of(p) == m["case"]]
            return _prediction_cases_from_files(path.parent, siblings, channel_names)
        if len(channel_names) != 1:
            raise InputError(
                path,
                f"one file holds one channel but the model expects {len(channel_names)} ({', '.join(channel_names)}); "
                "pass the case folder, or the CASE_0000 file of nnU-Net-named channels",
            )
        return [Case(strip_nifti_suffix(path.name), [path], None)]
    layout = _detect_layout(path)
    if layout is not None:
        subset = "Ts" if layout == "nnunet" and (path / "imagesTs").is_dir() else None
        return _prediction_cases_from_dataset(load_dataset(path, subset), channel_names)
    files = _nifti_files(path)
    if not files:
        raise InputError(
            path, f"no NIfTI files found; expected a NIfTI file, a case folder or a dataset folder ({_EXPECTED_LAYOUTS})"
        )
    return _prediction_cases_from_files(path, files, channel_names)


def label_to_int(label: np.ndarray, path: str | Path) -> np.ndarray:
    """Convert a label map to ``int32``, refusing values that are not whole numbers.

    Some datasets store labels as float32 with integer values (hippocampus); those convert exactly.

    Raises:
        InputError: a non-integer, NaN or infinite value (naming one), or a value outside int32.
    """
    label = np.asarray(label)
    if label.dtype.kind == "f":
        bad = ~np.isfinite(label) | (label != np.round(label))
        if bad.any():
            example = float(label[bad].flat[0])
            raise InputError(path, f"label map has non-integer values (e.g. {example:g}); labels must be whole numbers")
    elif label.dtype.kind not in "iub":
        raise InputError(path, f"label map has unsupported dtype {label.dtype}")
    if label.size and (label.min() < np.iinfo(np.int32).min or label.max() > np.iinfo(np.int32).max):
        raise InputError(path, "label values do not fit in int32")
    return label.astype(np.int32, copy=False)


def read_case(case: Case, with_label: bool = True) -> tuple[np.ndarray, np.ndarray | None, ImageGeometry]:
    """Read a case's channels (and label) into arrays.

    Args:
        case: from :func:`load_dataset` or :func:`find_prediction_cases`.
        with_label: read ``case.label_path`` when there is one.

    Returns:
        ``(image, label, geometry)``: ``image`` is ``(C, Z, Y, X)`` float32 in channel order; ``label`` is
        ``(Z, Y, X)`` int32, or ``None`` when not asked for or absent; ``geometry`` is that of channel 0.

    Raises:
        InputError: a missing channel, unreadable file, NaN or infinite intensities, channels or label of
            different shapes, or a label with non-integer values.
    """
    if case.missing_channels or not case.image_paths:
        where = case.image_paths[0].parent if case.image_paths else case.label_path
        missing = ", ".join(case.missing_channels) or "all"
        raise InputError(where, f"case {case.case_id}: missing channel(s) {missing}")
    first, geometry = read_volume(case.image_paths[0], np.float32)
    # Fill one preallocated block rather than stacking, to hold a single copy of the channels.
    image = np.empty((len(case.image_paths),) + first.shape, dtype=np.float32)
    image[0] = first
    del first
    for c, p in enumerate(case.image_paths[1:], start=1):
        array, _ = read_volume(p, np.float32)
        if array.shape != image.shape[1:]:
            raise InputError(p, f"channel shape (Z,Y,X) {array.shape} != {image.shape[1:]} of {case.image_paths[0].name}")
        image[c] = array
    for c, p in enumerate(case.image_paths):
        n_bad = int(np.count_nonzero(~np.isfinite(image[c])))
        if n_bad:  # NaN would spread through z-score and every window that sees it
            raise InputError(p, f"{n_bad} NaN or infinite intensities")
    label = None
    if with_label and case.label_path is not None:
        raw, _ = read_volume(case.label_path, dtype=None)
        if raw.shape != image.shape[1:]:
            raise InputError(case.label_path, f"label shape (Z,Y,X) {raw.shape} != image shape {image.shape[1:]}")
        label = label_to_int(raw, case.label_path)
    return image, label, geometry
