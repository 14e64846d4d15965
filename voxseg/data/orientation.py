"""Voxel-axis orientation: which anatomical direction each array axis runs towards, and the exact
(lossless) flips and axis permutations between two orientations.

A NIfTI file stores voxels in whatever order the scanner or converter chose: the same brain can be stored
axial "RAS", "LPS" or sagittal "PSR". A network trained on one order and shown another sees the anatomy
mirrored or turned and segments it badly without any error, so voxseg brings every scan to the run's
orientation before preprocessing and back afterwards (flips and permutations only: no interpolation, the
output keeps the input's exact geometry).

Codes are nibabel's axis codes of the file's voxel axes ``(i, j, k)`` (a file's own:
:func:`voxseg.io.orientation_code`), e.g. ``"RAS"``: ``i`` runs towards
the Right, ``j`` Anterior, ``k`` Superior. voxseg arrays are ``(Z, Y, X) = (k, j, i)``; the functions here
take and return such arrays (with a leading channel axis where said).
"""
from __future__ import annotations

from collections.abc import Sequence

import nibabel as nib
import numpy as np

__all__ = ["check_orientation_code", "reorient", "reoriented_spacing"]

_PAIRS = ("LR", "PA", "IS")


def check_orientation_code(code: str) -> str:
    """``code`` upper-cased when it names one direction of each pair (L/R, P/A, I/S), e.g. ``"RAS"``,
    ``"LPS"``, ``"PSR"``; else ``ValueError``."""
    text = str(code).upper()
    if len(text) != 3 or sorted(next((k for k, p in enumerate(_PAIRS) if c in p), -1) for c in text) != [0, 1, 2]:
        raise ValueError(f"orientation {code!r} is not three axis codes with one of each of L/R, P/A, I/S "
                         "(e.g. RAS, LPS)")
    return text


def _transform(source: str, target: str) -> np.ndarray:
    """nibabel orientation transform of the ``(i, j, k)`` axes from ``source`` to ``target`` codes."""
    return nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(tuple(source)),
                                           nib.orientations.axcodes2ornt(tuple(target)))


def reorient(array: np.ndarray, source: str, target: str, channel_first: bool = False) -> np.ndarray:
    """Flip and permute the spatial axes of ``array`` from orientation ``source`` to ``target``.

    Args:
        array: ``(Z, Y, X)`` or, with ``channel_first``, ``(C, Z, Y, X)``.
        source / target: axis codes (see :func:`voxseg.io.orientation_code`).

    Returns:
        a view of ``array`` (flips and transposes only), the same array when the codes are equal.
    """
    if source == target:
        return array
    transform = _transform(source, target)
    if channel_first:  # (C, Z, Y, X) -> (i, j, k, C), reorient the first three axes, and back
        return nib.orientations.apply_orientation(array.transpose(3, 2, 1, 0), transform).transpose(3, 2, 1, 0)
    return nib.orientations.apply_orientation(array.transpose(2, 1, 0), transform).transpose(2, 1, 0)


def reoriented_spacing(spacing: Sequence[float], source: str, target: str) -> tuple[float, float, float]:
    """``(sz, sy, sx)`` in mm of a volume in orientation ``source`` after :func:`reorient` to ``target``."""
    ijk = list(reversed([float(s) for s in spacing]))
    out = [0.0, 0.0, 0.0]
    for axis, (new_axis, _flip) in enumerate(_transform(source, target)):
        out[int(new_axis)] = ijk[axis]
    return tuple(reversed(out))  # type: ignore[return-value]
