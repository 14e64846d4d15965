"""Find the cases to predict in a file or folder and put their channels in the model's order."""
from __future__ import annotations

from pathlib import Path

from voxseg.errors import InputError
from voxseg.io.datasets import Case, Dataset
from voxseg.io.image import is_nifti, strip_nifti_suffix
from voxseg.io.layouts import (
    _ANONYMOUS_CHANNEL,
    _EXPECTED_LAYOUTS,
    _NNUNET_NAME,
    LABEL_SUFFIXES,
    _detect_layout,
    _group_nnunet_files,
    _nifti_files,
    _split_subject_files,
    _stems,
    load_dataset,
)

__all__ = ["find_prediction_cases"]


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

