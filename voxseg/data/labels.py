"""Label schemes: plain classes, or overlapping regions built from the label values.

Region-based training predicts *overlapping* regions, one sigmoid channel each, largest first.
Two built-in schemes cover BraTS, always in the order of :data:`REGION_NAMES` = ``("WT", "TC", "ET")``
(as nnU-Net orders them; note MONAI's ``ConvertToMultiChannelBasedOnBratsClasses`` uses TC, WT, ET).
The ``"regions"`` scheme takes any regions, as an nnU-Net v2 ``dataset.json`` declares them
(``"labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3}``
with ``"regions_class_order": [1, 2, 3]``).

=============  ==============================  ===============  ===============  ==========
scheme         label values                    WT (whole)       TC (core)        ET (enh.)
=============  ==============================  ===============  ===============  ==========
``brats``      0 bg, 1 NCR/NET, 2 ED, 4 ET     {1, 2, 4}        {1, 4}           {4}
``brats2023``  0 bg, 1 NCR, 2 ED, 3 ET         {1, 2, 3}        {1, 3}           {3}
=============  ==============================  ===============  ===============  ==========

``brats`` covers BraTS 2012-2021 (label 3 unused); ``brats2023`` the 2023+ challenges, where enhancing
tumour moved from 4 to 3. Going back from regions to labels paints each region's label in region
order, so later (smaller) regions take precedence, as nnU-Net's ``regions_class_order``: for BraTS
WT -> 2, then TC -> 1, then ET -> the ET label, i.e. ET > TC > WT, and overlapping or inconsistent
predictions resolve deterministically (ET outside TC is still ET).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxseg.errors import InputError

__all__ = [
    "REGION_NAMES",
    "SCHEME_NAMES",
    "BRATS_REGIONS",
    "LabelScheme",
    "labels_to_regions",
    "regions_to_labels",
    "check_labels_fit",
    "declared_regions_scheme",
]

REGION_NAMES: tuple[str, str, str] = ("WT", "TC", "ET")
"""Channel order of every region array in voxseg: 0 = whole tumour, 1 = tumour core, 2 = enhancing tumour."""

SCHEME_NAMES: tuple[str, ...] = ("classes", "brats", "brats2023", "regions")

BRATS_REGIONS: dict[str, dict[str, tuple[int, ...]]] = {
    "brats": {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)},
    "brats2023": {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)},
}
"""Scheme -> region name -> label values making up the region."""

_BRATS_PAINT: dict[str, tuple[int, ...]] = {"brats": (2, 1, 4), "brats2023": (2, 1, 3)}
"""Label painted for each region (WT, TC, ET order) when going back to labels: WT - TC = oedema, TC - ET = 1."""

_BRATS_LABEL_NAMES: dict[str, dict[int, str]] = {
    "brats": {0: "background", 1: "NCR/NET", 2: "ED", 4: "ET"},
    "brats2023": {0: "background", 1: "NCR", 2: "ED", 3: "ET"},
}


@dataclass
class LabelScheme:
    """How the label values of a dataset are turned into training targets and evaluation structures.

    Args:
        name: ``"classes"`` (each label value is its own mutually exclusive class; softmax),
            ``"brats"`` (BraTS <= 2021 labels 0/1/2/4 -> regions WT/TC/ET; sigmoid),
            ``"brats2023"`` (labels 0/1/2/3 -> regions WT/TC/ET; sigmoid) or
            ``"regions"`` (the regions given in ``region_values``; sigmoid).
        label_names: ``"classes"`` only: label value -> name (e.g. the dataset's ``{1: "anterior"}``);
            names structures and, when given, fixes the allowed values. Must be empty for the other
            schemes, whose structures are their regions.
        region_values: ``"regions"`` only: region name -> label values, largest region first (the
            network's output channels in this order).
        region_labels: ``"regions"`` only: the label value painted for each region when predictions go
            back to labels (nnU-Net's ``regions_class_order``), each one of its region's values.
            Default: for each region the one value it holds and no later region holds.

    Raises:
        ValueError: unknown ``name``, settings given to a scheme that does not take them, negative label
            values, duplicate names, or regions that cannot be painted back to labels.
    """

    name: str = "classes"
    label_names: dict[int, str] = field(default_factory=dict)
    region_values: dict[str, tuple[int, ...]] = field(default_factory=dict)
    region_labels: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.name not in SCHEME_NAMES:
            raise ValueError(f"unknown label scheme {self.name!r}; choose one of {', '.join(SCHEME_NAMES)}")
        self.label_names = {int(k): str(v) for k, v in dict(self.label_names or {}).items()}
        self.region_values = {str(k): tuple(int(v) for v in vs) for k, vs in dict(self.region_values or {}).items()}
        self.region_labels = tuple(int(v) for v in self.region_labels or ())
        if self.is_region_based and self.label_names:
            raise ValueError(f"label scheme {self.name!r} has fixed labels; label_names is only for 'classes'")
        if self.name != "regions" and (self.region_values or self.region_labels):
            raise ValueError(f"region_values and region_labels are for scheme 'regions', not {self.name!r}")
        if self.name == "regions":
            self.region_labels = _checked_regions(self.region_values, self.region_labels)
        if any(k < 0 for k in self.label_names):
            raise ValueError(f"label values must be >= 0, got {sorted(self.label_names)}")
        names = [v for k, v in self.label_names.items() if k != 0]
        if len(set(names)) != len(names):
            raise ValueError(f"label names must be unique, got {self.label_names}")

    @property
    def is_region_based(self) -> bool:
        """True for the region schemes (overlapping regions, sigmoid outputs)."""
        return self.name != "classes"

    @property
    def loss_mode(self) -> str:
        """The ``mode`` for :func:`voxseg.losses.build_loss`: ``"sigmoid"`` for regions, else ``"softmax"``."""
        return "sigmoid" if self.is_region_based else "softmax"

    @property
    def regions(self) -> dict[str, tuple[int, ...]]:
        """Region name -> label values in output-channel order (:data:`REGION_NAMES` for BraTS; empty for
        ``"classes"``)."""
        if self.name == "regions":
            return dict(self.region_values)
        return dict(BRATS_REGIONS[self.name]) if self.is_region_based else {}

    @property
    def paint_labels(self) -> tuple[int, ...]:
        """The label value painted for each region, in :attr:`regions` order (empty for ``"classes"``)."""
        if self.name == "regions":
            return self.region_labels
        return _BRATS_PAINT.get(self.name, ())

    @property
    def allowed_labels(self) -> tuple[int, ...] | None:
        """Label values that may occur (background 0 included); ``None`` = any for ``"classes"`` without names."""
        if self.name == "regions":
            return tuple(sorted({0} | {v for vs in self.region_values.values() for v in vs}))
        if self.is_region_based:
            return tuple(sorted(_BRATS_LABEL_NAMES[self.name]))
        if not self.label_names:
            return None
        return tuple(sorted(set(self.label_names) | {0}))

    def structures(self) -> dict[str, list[int]]:
        """Evaluation structure name -> label values, the ``structures`` argument of ``voxseg.metrics``.

        ``"brats"`` -> ``{"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}``; ``"classes"`` -> each non-zero label
        alone, named by ``label_names`` (``{"anterior": [1], "posterior": [2]}``), or ``"label_<v>"`` for
        values whose name is missing or empty.

        Raises:
            ValueError: ``"classes"`` without ``label_names`` (the label values are unknown).
        """
        if self.is_region_based:
            return {k: list(v) for k, v in self.regions.items()}
        if not self.label_names:
            raise ValueError("label scheme 'classes' needs label_names to list its structures")
        out: dict[str, list[int]] = {}
        for value in sorted(self.label_names):
            if value == 0:
                continue
            name = self.label_names[value] or f"label_{value}"
            if name in out:
                name = f"label_{value}"
            out[name] = [value]
        return out

    def to_dict(self) -> dict:
        """JSON-ready dict (label keys as strings); :meth:`from_dict` inverts it exactly."""
        out: dict = {"name": self.name, "label_names": {str(k): v for k, v in sorted(self.label_names.items())}}
        if self.name == "regions":
            out["region_values"] = {k: list(v) for k, v in self.region_values.items()}
            out["region_labels"] = list(self.region_labels)
        return out

    @classmethod
    def from_dict(cls, d: Mapping) -> LabelScheme:
        """Inverse of :meth:`to_dict`."""
        return cls(name=d["name"], label_names={int(k): v for k, v in dict(d.get("label_names") or {}).items()},
                   region_values=dict(d.get("region_values") or {}), region_labels=tuple(d.get("region_labels") or ()))


def _checked_regions(regions: dict[str, tuple[int, ...]], paint: tuple[int, ...]) -> tuple[int, ...]:
    """``paint`` (or its default) after checking that painting the regions in order inverts them."""
    if not regions:
        raise ValueError("label scheme 'regions' needs region_values (region name -> label values)")
    values = [v for vs in regions.values() for v in vs]
    if any(v <= 0 for v in values):
        raise ValueError(f"region label values must be > 0 (0 is background), got {regions}")
    if any(not vs for vs in regions.values()):
        raise ValueError(f"every region needs at least one label value, got {regions}")
    names = list(regions)
    if not paint:
        own = [sorted(set(regions[n]) - {v for later in names[i + 1:] for v in regions[later]})
               for i, n in enumerate(names)]
        if any(len(o) != 1 for o in own):
            raise ValueError(f"cannot tell which label to paint for each region of {regions}: give region_labels "
                             "(nnU-Net's regions_class_order)")
        paint = tuple(o[0] for o in own)
    if len(paint) != len(names):
        raise ValueError(f"region_labels needs one label per region ({len(names)}), got {list(paint)}")
    for name, value in zip(names, paint):
        if value not in regions[name]:
            raise ValueError(f"region_labels gives region {name!r} label {value}, which is not one of its values "
                             f"{list(regions[name])}")
    # Painting must keep every label in the regions that hold it, or predictions come back as wrong labels.
    member = {v: {n for n in names if v in regions[n]} for v in values}
    for v in sorted(member):
        painted = paint[max(i for i, n in enumerate(names) if n in member[v])]
        if member[painted] != member[v]:
            raise ValueError(f"region_labels {list(paint)} turn label {v} (in {sorted(member[v])}) into {painted} "
                             f"(in {sorted(member[painted])}): give each region the label only it and the regions "
                             "before it hold (nnU-Net's regions_class_order)")
    return tuple(paint)


def _scheme(scheme: LabelScheme | str) -> LabelScheme:
    return scheme if isinstance(scheme, LabelScheme) else LabelScheme(scheme)


def _describe(scheme: LabelScheme) -> str:
    if scheme.name == "regions":
        regions = ", ".join(f"{k} {list(v)}" for k, v in scheme.regions.items())
        return f"'regions' (labels {list(scheme.allowed_labels or [])} in regions {regions})"
    if scheme.is_region_based:
        labels = ", ".join(f"{k} {v}" for k, v in _BRATS_LABEL_NAMES[scheme.name].items())
        return f"'{scheme.name}' (labels {labels})"
    return f"'classes' (labels {list(scheme.allowed_labels or [])})"


def declared_regions_scheme(regions: Mapping[str, Iterable[int]], paint: Iterable[int] | None,
                            where: Path) -> LabelScheme:
    """The ``"regions"`` scheme of the regions a dataset declares (an nnU-Net dataset.json's list-valued
    labels and its ``regions_class_order``, as :class:`voxseg.io.Dataset` holds them).

    Raises:
        InputError: regions that cannot be painted back to labels, in one line naming ``where`` (the
            dataset.json).
    """
    try:
        return LabelScheme("regions", region_values=dict(regions), region_labels=tuple(paint or ()))
    except ValueError as exc:
        raise InputError(where, str(exc)) from None


def check_labels_fit(values: Iterable[int] | np.ndarray, scheme: LabelScheme | str) -> None:
    """Raise ``ValueError`` when the label values found in a dataset cannot be read by ``scheme``.

    Args:
        values: label values present (e.g. ``np.unique(seg)`` or a fingerprint's list), or a label array.
        scheme: a :class:`LabelScheme` or its name.

    Raises:
        ValueError: negative or non-integer values, or values outside the scheme, with a hint when the
            data looks like the other BraTS convention (label 3 under ``"brats"``, 4 under ``"brats2023"``).
    """
    scheme = _scheme(scheme)
    arr = np.unique(np.asarray(values if not isinstance(values, (set, frozenset)) else sorted(values)))
    if arr.size and arr.dtype.kind == "f":
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"label values must be integers, found {arr[arr != np.round(arr)][:5].tolist()}")
    elif arr.size and arr.dtype.kind not in "iub":
        raise ValueError(f"label values must be integers, got dtype {arr.dtype}")
    found = sorted(int(v) for v in arr)
    if any(v < 0 for v in found):
        raise ValueError(f"label values must be >= 0, found {[v for v in found if v < 0]}")
    allowed = scheme.allowed_labels
    if allowed is None:
        return
    extra = [v for v in found if v not in allowed]
    if not extra:
        return
    msg = f"label values {extra} do not fit label scheme {_describe(scheme)}"
    if scheme.name == "brats" and 3 in extra and 4 not in found:
        msg += "; label 3 with no 4 looks like BraTS 2023 data (ET = 3): use scheme 'brats2023'"
    elif scheme.name == "brats2023" and 4 in extra:
        msg += "; label 4 looks like BraTS <= 2021 data (ET = 4): use scheme 'brats'"
    elif scheme.name == "classes":
        msg += "; add them to label_names or remap them"
    raise ValueError(msg)


def labels_to_regions(label: np.ndarray, scheme: LabelScheme | str) -> np.ndarray:
    """Label map -> binary region masks.

    Args:
        label: ``(Z, Y, X)`` (or any-dimensional) integer label map.
        scheme: a region scheme (``"brats"``, ``"brats2023"`` or a :class:`LabelScheme` of them or of ``"regions"``).

    Returns:
        ``(R, *label.shape)`` uint8, one channel per region in :attr:`LabelScheme.regions` order
        (WT, TC, ET for BraTS).

    Raises:
        ValueError: a non-region scheme, or labels that do not fit (see :func:`check_labels_fit`).
    """
    scheme = _scheme(scheme)
    if not scheme.is_region_based:
        raise ValueError(f"labels_to_regions needs a region scheme, got {scheme.name!r}")
    label = np.asarray(label)
    check_labels_fit(np.unique(label), scheme)
    regions = scheme.regions
    out = np.empty((len(regions), *label.shape), dtype=np.uint8)
    for i, values in enumerate(regions.values()):
        out[i] = np.isin(label, values)
    return out


def regions_to_labels(regions: np.ndarray, scheme: LabelScheme | str, dtype: type | np.dtype = np.uint8) -> np.ndarray:
    """Binary region masks -> label map: each region's label painted in region order (later ones win).

    BraTS: WT -> 2 (ED), then TC -> 1 (NCR/NET), then ET -> the ET label (4 for ``"brats"``, 3 for
    ``"brats2023"``), i.e. precedence ET > TC > WT; inverts :func:`labels_to_regions` exactly. Scheme
    ``"regions"`` paints :attr:`LabelScheme.paint_labels` (nnU-Net's ``regions_class_order``).

    Args:
        regions: ``(R, *spatial)`` in :attr:`LabelScheme.regions` order; bool, integer 0/1 or float 0/1.
            Threshold probabilities first: fractional values raise.
        scheme: a region scheme.
        dtype: dtype of the result.

    Returns:
        ``(*spatial)`` label map, 0 where no region is set.
    """
    scheme = _scheme(scheme)
    if not scheme.is_region_based:
        raise ValueError(f"regions_to_labels needs a region scheme, got {scheme.name!r}")
    names = tuple(scheme.regions)
    regions = np.asarray(regions)
    if regions.ndim < 2 or regions.shape[0] != len(names):
        raise ValueError(f"regions must be ({len(names)}, *spatial) in order {names}, got shape {regions.shape}")
    if regions.dtype != np.bool_:
        if not np.isin(regions, (0, 1)).all():
            raise ValueError("regions must be binary (0/1 or bool); threshold probabilities before regions_to_labels")
        regions = regions.astype(bool)
    out = np.zeros(regions.shape[1:], dtype=dtype)
    for mask, value in zip(regions, scheme.paint_labels):
        out[mask] = value
    return out
