"""Read an nnU-Net v2 ``dataset.json``: channel names in index order, label names and regions.

The format is nnU-Net v2's (Isensee et al. 2021): ``channel_names`` (``{"0": "T1", ...}``), ``labels``
(``{"background": 0, "tumour": 1}``, or region lists such as ``"whole tumor": [1, 2, 3]``),
``regions_class_order`` and ``file_ending``. nnU-Net v1's ``modality`` and ``{"0": "background"}`` labels are
accepted too.
"""
from __future__ import annotations

import json
from pathlib import Path

from voxseg.errors import InputError
from voxseg.io.image import is_nifti

__all__ = ["read_dataset_json", "read_dataset_labels"]


def read_dataset_json(root: Path) -> tuple[list[str], dict[int, str] | None, dict[str, list[int]] | None,
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
    _, names, regions, paint = read_dataset_json(root)
    return names, regions, paint

