"""Check a dataset before training: every file readable, geometries consistent, labels as expected.

:func:`validate_dataset` reads every file of every case once (full voxel data, so a truncated ``.nii.gz``
is caught) and returns a :class:`ValidationReport`: one :class:`CaseSummary` row per case and one
:class:`Problem` per defect, each a single line ``"<path>: <message>"`` that says what is wrong and by how
much. :func:`format_table` renders the report for a terminal.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from voxseg.errors import InputError
from voxseg.io.datasets import Case, Dataset
from voxseg.io.image import ImageGeometry, read_volume

__all__ = [
    "CaseSummary",
    "Problem",
    "ValidationReport",
    "validate_dataset",
    "geometry_difference",
    "format_table",
    "ORIGIN_TOLERANCE_MM",
    "SPACING_TOLERANCE_MM",
    "DIRECTION_TOLERANCE_DEG",
]

#: Geometries closer than these are equal: float32 headers round origins of a few hundred mm at ~1e-5 mm.
ORIGIN_TOLERANCE_MM = 1e-3
SPACING_TOLERANCE_MM = 1e-3
DIRECTION_TOLERANCE_DEG = 1e-3


@dataclass
class CaseSummary:
    """One row of the validation table.

    Attributes:
        case_id: the case.
        n_channels: image files found (missing channels not counted).
        shape: ``(Z, Y, X)`` of the first readable image (or of the label when there is no image); ``None``
            when nothing was readable.
        spacing: ``(sz, sy, sx)`` in mm, from the same file as ``shape``.
        label_values: sorted distinct label values, ``None`` without a readable integer label.
        orientation: axis codes of the voxel order, e.g. ``"RAS"`` (see :func:`voxseg.io.orientation_code`),
            from the same file as ``shape``.
    """

    case_id: str
    n_channels: int
    shape: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    label_values: list[int] | None = None
    orientation: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {
            "case_id": self.case_id,
            "n_channels": self.n_channels,
            "shape": None if self.shape is None else list(self.shape),
            "spacing": None if self.spacing is None else list(self.spacing),
            "label_values": None if self.label_values is None else list(self.label_values),
            "orientation": self.orientation,
        }


@dataclass
class Problem:
    """One defect of one file: ``str(problem) == f"{path}: {message}"``.

    Attributes:
        case_id: the case the file belongs to.
        path: the offending file (or the case folder for a missing channel).
        message: what is wrong, with the measured amounts.
    """

    case_id: str
    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"case_id": self.case_id, "path": str(self.path), "message": self.message}


@dataclass
class ValidationReport:
    """Result of :func:`validate_dataset`.

    Attributes:
        rows: one summary per case, in the dataset's case order.
        problems: every defect found, in case order.
    """

    rows: list[CaseSummary] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def background_only(self, case_ids: set[str] | None = None) -> int:
        """Number of readable label maps when all of them (of ``case_ids``, default all) hold only 0, else 0.

        Not a problem of any file (a case without the structure is valid), but such a dataset has nothing
        to learn from: ``voxseg train`` refuses it and ``voxseg validate`` warns.
        """
        values = [r.label_values for r in self.rows
                  if r.label_values is not None and (case_ids is None or r.case_id in case_ids)]
        return len(values) if values and all(set(v) <= {0} for v in values) else 0

    def orientations(self) -> dict[str, list[str]]:
        """Voxel order (axis codes) -> the case ids stored in it, most common first."""
        out: dict[str, list[str]] = {}
        for r in self.rows:
            if r.orientation:
                out.setdefault(r.orientation, []).append(r.case_id)
        return dict(sorted(out.items(), key=lambda item: -len(item[1])))

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"rows": [r.to_dict() for r in self.rows], "problems": [p.to_dict() for p in self.problems]}


# ----------------------------------------------------------------------------------------------------------
# Geometry comparison


def geometry_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """How far apart two voxel-to-world affines are.

    Args:
        a, b: ``(4, 4)`` affines.

    Returns:
        ``(origin_mm, spacing_mm, direction_deg)``: distance between the origins (mm), the largest difference
        of voxel sizes along any axis (mm), and the largest angle between corresponding axis directions
        (degrees).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    origin = float(np.linalg.norm(a[:3, 3] - b[:3, 3]))
    size_a = np.linalg.norm(a[:3, :3], axis=0)
    size_b = np.linalg.norm(b[:3, :3], axis=0)
    spacing = float(np.abs(size_a - size_b).max())
    da = a[:3, :3] / np.where(size_a > 0, size_a, 1.0)
    db = b[:3, :3] / np.where(size_b > 0, size_b, 1.0)
    # atan2(|u x v|, u.v) stays accurate for tiny angles where arccos(u.v) does not.
    cross = np.linalg.norm(np.cross(da.T, db.T), axis=1)
    dot = np.einsum("ij,ij->j", da, db)
    angle = float(np.degrees(np.arctan2(cross, dot)).max())
    return origin, spacing, angle


def _geometry_message(a: ImageGeometry, b: ImageGeometry) -> str | None:
    """``None`` when equal within tolerance, else ``'origin off by 2.000 mm, ...'`` for the measures that differ."""
    origin, spacing, angle = geometry_difference(a.affine, b.affine)
    parts = []
    if origin > ORIGIN_TOLERANCE_MM:
        parts.append(f"origin off by {origin:.3f} mm")
    if spacing > SPACING_TOLERANCE_MM:
        parts.append(f"spacing off by {spacing:.3f} mm")
    if angle > DIRECTION_TOLERANCE_DEG:
        parts.append(f"direction off by {angle:.3f} deg")
    return ", ".join(parts) if parts else None


# ----------------------------------------------------------------------------------------------------------
# Per-array checks


def _distinct_values(array: np.ndarray) -> np.ndarray:
    """Sorted distinct values; a bincount for small-range integers, far faster than sorting 9 M voxels."""
    if array.size == 0:
        return np.empty(0, dtype=np.int64)
    if array.dtype.kind in "iub":
        lo, hi = int(array.min()), int(array.max())
        if hi - lo < 1 << 20:
            counts = np.bincount((array.ravel().astype(np.int64) - lo))
            return np.nonzero(counts)[0] + lo
    return np.unique(array)


def _fmt_values(values) -> str:
    values = list(values)
    shown = ", ".join(_fmt_number(v) for v in values[:10])
    return f"[{shown}{', ...' if len(values) > 10 else ''}]"


def _fmt_number(v) -> str:
    v = float(v)
    return str(int(v)) if np.isfinite(v) and v == int(v) else f"{v:g}"


def _check_image(case_id: str, path: Path, array: np.ndarray) -> list[Problem]:
    problems = []
    if array.dtype.kind == "f":
        n_nan = int(np.isnan(array).sum())
        n_inf = int(np.isinf(array).sum())
        if n_nan or n_inf:
            problems.append(Problem(case_id, path, f"image has {n_nan} NaN and {n_inf} Inf voxels"))
        finite = array[np.isfinite(array)] if (n_nan or n_inf) else array
    else:
        finite = array
    if finite.size and finite.min() == finite.max():
        problems.append(Problem(case_id, path, f"constant image (every voxel = {_fmt_number(finite.flat[0])})"))
    elif not finite.size:
        problems.append(Problem(case_id, path, "constant image (no finite voxel)"))
    return problems


def _check_label(
    case_id: str, path: Path, array: np.ndarray, allowed: set[int] | None
) -> tuple[list[int] | None, list[Problem]]:
    """``(distinct values or None, problems)`` for one label map."""
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            examples = _fmt_values(np.unique(array[bad]))
            message = f"unexpected label values: {int(bad.sum())} non-integer voxels, e.g. {examples}"
            return None, [Problem(case_id, path, message)]
        array = array.astype(np.int64)
    values = [int(v) for v in _distinct_values(array)]
    if allowed is not None:
        unexpected = [v for v in values if v not in allowed]
        if unexpected:
            message = f"unexpected label values {_fmt_values(unexpected)} (allowed: {_fmt_values(sorted(allowed))})"
            return values, [Problem(case_id, path, message)]
    else:
        negative = [v for v in values if v < 0]
        if negative:
            return values, [Problem(case_id, path, f"unexpected label values {_fmt_values(negative)} (negative)")]
    return values, []


def _read(case_id: str, path: Path, problems: list[Problem]) -> tuple[np.ndarray, ImageGeometry] | None:
    """Read all voxels of ``path`` in their on-disk dtype; an unreadable file becomes a problem."""
    try:
        # Full voxel data, not just the header: a truncated .nii.gz only fails while decompressing.
        return read_volume(path, dtype=None)
    except InputError as exc:
        problems.append(Problem(case_id, path, exc.problem))  # says which: missing, header, voxel data
        return None


def _validate_case(
    case: Case, channel_names: list[str], allowed: set[int] | None, require_label: bool
) -> tuple[CaseSummary, list[Problem]]:
    """Summary row and problems of one case; each file is read once."""
    cid = case.case_id
    problems: list[Problem] = []

    def add(path: Path, message: str) -> None:
        problems.append(Problem(cid, path, message))

    row = CaseSummary(cid, len(case.image_paths))
    present = [n for n in channel_names if n not in case.missing_channels]
    if not case.image_paths and case.label_path is not None:
        add(case.label_path, f"label without image (no image file for case {cid})")
    elif case.missing_channels:  # an image-less case is one line above, not one per channel
        for name in case.missing_channels:
            add(case.image_paths[0].parent, f"case {cid}: missing channel {name}")

    read: list[tuple[str, Path, ImageGeometry]] = []
    for name, path in zip(present, case.image_paths):
        loaded = _read(cid, path, problems)
        if loaded is None:
            continue
        array, geometry = loaded
        problems.extend(_check_image(cid, path, array))
        del array  # one channel in memory at a time (BraTS: 4 x 240x240x155)
        read.append((name, path, geometry))
    reference = _majority(read)
    if reference is not None:
        row.shape, row.spacing = reference[2].shape, _round_spacing(reference[2].spacing)
        row.orientation = reference[2].orientation
    for name, path, geometry in read:
        ref_name, ref_path, ref_geometry = reference
        if path == ref_path:
            continue
        if geometry.shape != ref_geometry.shape:
            add(path, f"channel {name} shape mismatch: (Z,Y,X) {geometry.shape} vs {ref_geometry.shape} of channel {ref_name}")
        elif (diff := _geometry_message(geometry, ref_geometry)) is not None:
            add(path, f"channel {name} geometry differs from channel {ref_name}: {diff}")

    if case.label_path is None:
        if case.image_paths and require_label:
            add(case.image_paths[0], f"no label file for case {cid}")
        return row, problems
    loaded = _read(cid, case.label_path, problems)
    if loaded is None:
        return row, problems
    label, label_geometry = loaded
    row.label_values, label_problems = _check_label(cid, case.label_path, label, allowed)
    problems.extend(label_problems)
    if reference is None:
        row.shape, row.spacing = label_geometry.shape, _round_spacing(label_geometry.spacing)
        row.orientation = label_geometry.orientation
        return row, problems
    _, ref_path, ref_geometry = reference
    if label_geometry.shape != ref_geometry.shape:
        add(case.label_path, f"shape mismatch: label (Z,Y,X) {label_geometry.shape} vs image {ref_geometry.shape} ({ref_path.name})")
    if (diff := _geometry_message(label_geometry, ref_geometry)) is not None:
        add(case.label_path, f"affine mismatch with image {ref_path.name}: {diff}")
    return row, problems


def _majority(read: list[tuple[str, Path, ImageGeometry]]) -> tuple[str, Path, ImageGeometry] | None:
    """The channel whose shape and geometry most other channels share (the first such on a tie), so that a
    single channel moved or resized is named as the odd one out rather than every channel beside it."""
    def agreeing(geometry: ImageGeometry) -> int:
        return sum(g.shape == geometry.shape and _geometry_message(g, geometry) is None for _, _, g in read)

    return max(read, key=lambda entry: agreeing(entry[2]), default=None)


def _round_spacing(spacing: tuple[float, float, float]) -> tuple[float, float, float]:
    # float32 headers give 0.9375000xxx; 6 decimals is far below any scanner's precision.
    return tuple(round(s, 6) for s in spacing)  # type: ignore[return-value]


def validate_dataset(
    dataset: Dataset,
    allowed_labels: set[int] | None = None,
    progress: bool = False,
    require_labels: bool | None = None,
) -> ValidationReport:
    """Read every case of ``dataset`` and report what is wrong with it.

    Checks, one problem line each: unreadable or truncated file; missing channel; channels of one case with
    different shapes or geometry; image/label shape mismatch (both shapes); image/label affine mismatch (origin
    distance in mm, largest spacing difference in mm, largest direction angle in degrees; tolerances
    :data:`ORIGIN_TOLERANCE_MM`, :data:`SPACING_TOLERANCE_MM`, :data:`DIRECTION_TOLERANCE_DEG`); image without
    label; label without image; unexpected label values; NaN/Inf voxels in an image (counted); constant image.

    Args:
        dataset: from :func:`voxseg.io.layouts.load_dataset`.
        allowed_labels: label values that may occur. Default: the keys of ``dataset.label_names``
            (nnU-Net ``dataset.json``) when present; otherwise only negative or non-integer values are flagged.
        progress: show a tqdm progress bar (on stderr, when it is a terminal).
        require_labels: report images without a label. Default: when at least one case has a label (a dataset
            with no label at all is taken to be test data).

    Returns:
        The :class:`ValidationReport`; ``report.ok`` is True when nothing was found.
    """
    if allowed_labels is None and dataset.label_names:
        allowed_labels = set(dataset.label_names)
    allowed = None if allowed_labels is None else {int(v) for v in allowed_labels}
    if require_labels is None:
        require_labels = any(c.label_path is not None for c in dataset.cases)
    report = ValidationReport()
    for case in tqdm(dataset.cases, desc="validating", unit="case", disable=None if progress else True):
        row, problems = _validate_case(case, dataset.channel_names, allowed, require_labels)
        report.rows.append(row)
        report.problems.extend(problems)
    return report


def format_table(report: ValidationReport, with_problems: bool = True) -> str:
    """Render ``report`` as a fixed-width table (case, channels, shape, spacing, labels) then its problems.

    Args:
        with_problems: append the problem list (or "no problems found"); the CLI passes ``False`` and
            prints each problem once, as an ``error:`` line on stderr.

    Returns:
        Multi-line text without a trailing newline.
    """
    header = ("case", "channels", "shape (Z,Y,X)", "spacing (mm)", "voxel order", "labels")
    body = [
        (
            r.case_id,
            str(r.n_channels),
            "-" if r.shape is None else "x".join(str(s) for s in r.shape),
            "-" if r.spacing is None else "x".join(f"{s:.4g}" for s in r.spacing),
            r.orientation or "-",
            "-" if r.label_values is None else ",".join(str(v) for v in r.label_values),
        )
        for r in report.rows
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if not with_problems:
        return "\n".join(lines)
    n = len(report.problems)
    lines.append("")
    if n:
        lines.append(f"{n} problem{'s' if n != 1 else ''}:")
        lines.extend(str(p) for p in report.problems)
    else:
        lines.append(f"no problems found in {len(report.rows)} case{'s' if len(report.rows) != 1 else ''}")
    return "\n".join(lines)
