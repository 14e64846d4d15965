"""A dataset's cases (:class:`Case`, :class:`Dataset`) and reading one case's volumes into arrays.

Finding the cases on disk is :func:`voxseg.io.layouts.load_dataset` (training data, by layout) and
:func:`voxseg.io.prediction_cases.find_prediction_cases` (inputs to predict, in a model's channel order).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxseg.errors import InputError
from voxseg.io.image import ImageGeometry, read_volume

__all__ = ["Case", "Dataset", "read_case", "label_to_int"]



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
