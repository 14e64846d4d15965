"""Label schemes: plain classes, or BraTS tumour regions built from the label values.

Region-based BraTS training predicts three *overlapping* regions, one sigmoid channel each, always
in the order of :data:`REGION_NAMES` = ``("WT", "TC", "ET")`` (largest to smallest, as nnU-Net
orders them; note MONAI's ``ConvertToMultiChannelBasedOnBratsClasses`` uses TC, WT, ET).

=============  ==============================  ===============  ===============  ==========
scheme         label values                    WT (whole)       TC (core)        ET (enh.)
=============  ==============================  ===============  ===============  ==========
``brats``      0 bg, 1 NCR/NET, 2 ED, 4 ET     {1, 2, 4}        {1, 4}           {4}
``brats2023``  0 bg, 1 NCR, 2 ED, 3 ET         {1, 2, 3}        {1, 3}           {3}
=============  ==============================  ===============  ===============  ==========

``brats`` covers BraTS 2012-2021 (label 3 unused); ``brats2023`` the 2023+ challenges, where enhancing
tumour moved from 4 to 3. Going back from regions to labels uses the precedence ET > TC > WT:
ET -> ET label, TC minus ET -> 1, WT minus TC -> 2, so overlapping or inconsistent predictions
resolve deterministically (ET outside TC is still ET).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "REGION_NAMES",
    "SCHEME_NAMES",
    "BRATS_REGIONS",
    "LabelScheme",
    "labels_to_regions",
    "regions_to_labels",
    "check_labels_fit",
]

REGION_NAMES: tuple[str, str, str] = ("WT", "TC", "ET")
"""Channel order of every region array in voxseg: 0 = whole tumour, 1 = tumour core, 2 = enhancing tumour."""

SCHEME_NAMES: tuple[str, ...] = ("classes", "brats", "brats2023")

BRATS_REGIONS: dict[str, dict[str, tuple[int, ...]]] = {
    "brats": {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)},
    "brats2023": {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)},
}
"""Scheme -> region name -> label values making up the region."""

_BRATS_LABEL_NAMES: dict[str, dict[int, str]] = {
    "brats": {0: "background", 1: "NCR/NET", 2: "ED", 4: "ET"},
    "brats2023": {0: "background", 1: "NCR", 2: "ED", 3: "ET"},
}


@dataclass
class LabelScheme:
    """How the label values of a dataset are turned into training targets and evaluation structures.

    Args:
        name: ``"classes"`` (each label value is its own mutually exclusive class; softmax),
            ``"brats"`` (BraTS <= 2021 labels 0/1/2/4 -> regions WT/TC/ET; sigmoid) or
            ``"brats2023"`` (labels 0/1/2/3 -> regions WT/TC/ET; sigmoid).
        label_names: ``"classes"`` only: label value -> name (e.g. the dataset's ``{1: "anterior"}``);
            names structures and, when given, fixes the allowed values. Must be empty for BraTS
            schemes, whose label names are fixed.

    Raises:
        ValueError: unknown ``name``, ``label_names`` given for a BraTS scheme, negative label values
            or duplicate names.
    """

    name: str = "classes"
    label_names: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in SCHEME_NAMES:
            raise ValueError(f"unknown label scheme {self.name!r}; choose one of {', '.join(SCHEME_NAMES)}")
        self.label_names = {int(k): str(v) for k, v in dict(self.label_names or {}).items()}
        if self.is_region_based and self.label_names:
            raise ValueError(f"label scheme {self.name!r} has fixed labels; label_names is only for 'classes'")
        if any(k < 0 for k in self.label_names):
            raise ValueError(f"label values must be >= 0, got {sorted(self.label_names)}")
        names = [v for k, v in self.label_names.items() if k != 0]
        if len(set(names)) != len(names):
            raise ValueError(f"label names must be unique, got {self.label_names}")

    @property
    def is_region_based(self) -> bool:
        """True for the BraTS schemes (overlapping regions, sigmoid outputs)."""
        return self.name in BRATS_REGIONS

    @property
    def loss_mode(self) -> str:
        """The ``mode`` for :func:`voxseg.losses.build_loss`: ``"sigmoid"`` for regions, else ``"softmax"``."""
        return "sigmoid" if self.is_region_based else "softmax"

    @property
    def regions(self) -> dict[str, tuple[int, ...]]:
        """Region name -> label values, in :data:`REGION_NAMES` order (empty for ``"classes"``)."""
        return dict(BRATS_REGIONS[self.name]) if self.is_region_based else {}

    @property
    def allowed_labels(self) -> tuple[int, ...] | None:
        """Label values that may occur (background 0 included); ``None`` = any for ``"classes"`` without names."""
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
            return {k: list(v) for k, v in BRATS_REGIONS[self.name].items()}
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
        return {"name": self.name, "label_names": {str(k): v for k, v in sorted(self.label_names.items())}}

    @classmethod
    def from_dict(cls, d: Mapping) -> LabelScheme:
        """Inverse of :meth:`to_dict`."""
        return cls(name=d["name"], label_names={int(k): v for k, v in dict(d.get("label_names") or {}).items()})


def _scheme(scheme: LabelScheme | str) -> LabelScheme:
    return scheme if isinstance(scheme, LabelScheme) else LabelScheme(scheme)


def _describe(scheme: LabelScheme) -> str:
    if scheme.is_region_based:
        labels = ", ".join(f"{k} {v}" for k, v in _BRATS_LABEL_NAMES[scheme.name].items())
        return f"'{scheme.name}' (labels {labels})"
    return f"'classes' (labels {list(scheme.allowed_labels or [])})"


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
    """BraTS label map -> binary region masks.

    Args:
        label: ``(Z, Y, X)`` (or any-dimensional) integer label map.
        scheme: ``"brats"`` or ``"brats2023"`` (or a :class:`LabelScheme` with that name).

    Returns:
        ``(3, *label.shape)`` uint8, channels in :data:`REGION_NAMES` order (WT, TC, ET).

    Raises:
        ValueError: a non-region scheme, or labels that do not fit (see :func:`check_labels_fit`).
    """
    scheme = _scheme(scheme)
    if not scheme.is_region_based:
        raise ValueError(f"labels_to_regions needs a region scheme ('brats' or 'brats2023'), got {scheme.name!r}")
    label = np.asarray(label)
    check_labels_fit(np.unique(label), scheme)
    regions = BRATS_REGIONS[scheme.name]
    out = np.empty((len(REGION_NAMES), *label.shape), dtype=np.uint8)
    for i, region in enumerate(REGION_NAMES):
        out[i] = np.isin(label, regions[region])
    return out


def regions_to_labels(regions: np.ndarray, scheme: LabelScheme | str, dtype: type | np.dtype = np.uint8) -> np.ndarray:
    """Binary region masks -> BraTS label map, precedence ET > TC > WT.

    ET -> ET label (4 for ``"brats"``, 3 for ``"brats2023"``); TC and not ET -> 1 (NCR/NET);
    WT and not TC -> 2 (ED); nothing -> 0. Inverts :func:`labels_to_regions` exactly.

    Args:
        regions: ``(3, *spatial)`` in :data:`REGION_NAMES` order (WT, TC, ET); bool, integer 0/1 or
            float 0/1. Threshold probabilities first: fractional values raise.
        scheme: ``"brats"`` or ``"brats2023"``.
        dtype: dtype of the result.

    Returns:
        ``(*spatial)`` label map.
    """
    scheme = _scheme(scheme)
    if not scheme.is_region_based:
        raise ValueError(f"regions_to_labels needs a region scheme ('brats' or 'brats2023'), got {scheme.name!r}")
    regions = np.asarray(regions)
    if regions.ndim < 2 or regions.shape[0] != len(REGION_NAMES):
        raise ValueError(
            f"regions must be ({len(REGION_NAMES)}, *spatial) in order {REGION_NAMES}, got shape {regions.shape}"
        )
    if regions.dtype != np.bool_:
        if not np.isin(regions, (0, 1)).all():
            raise ValueError("regions must be binary (0/1 or bool); threshold probabilities before regions_to_labels")
        regions = regions.astype(bool)
    wt, tc, et = (regions[REGION_NAMES.index(r)] for r in ("WT", "TC", "ET"))
    et_label = BRATS_REGIONS[scheme.name]["ET"][0]
    out = np.zeros(regions.shape[1:], dtype=dtype)
    out[wt] = 2
    out[tc] = 1
    out[et] = et_label
    return out
