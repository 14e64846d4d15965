"""Synthetic BraTS-like brain-tumour phantoms, for tests and demos without downloads.

Each case is a skull-stripped "brain" ellipsoid (0 outside) with white matter, a grey-matter rim and
two ventricles, and a tumour made of nested irregular regions: necrotic core (label 1) inside an
enhancing rim (label 4) inside oedema (label 2). Four channels with contrasts chosen so that every
sub-region stands out in some channel: oedema bright in FLAIR and T2, enhancing rim bright in T1ce,
necrosis dark in T1ce and bright in T2. A smooth multiplicative bias field and Rician noise are
applied, and the files carry a non-identity affine (given spacing, small rotation, off-centre origin)
so geometry handling is exercised.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from voxseg.io.image import ImageGeometry, write_volume

__all__ = ["CHANNEL_NAMES", "LABELS", "make_phantom_case", "make_phantom_dataset", "phantom_geometry"]

CHANNEL_NAMES: dict[str, str] = {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}
#: BraTS label values, deliberately non-consecutive (no 3).
LABELS: dict[str, int] = {"background": 0, "necrosis": 1, "edema": 2, "enhancing": 4}

# Relative intensities per tissue, channels FLAIR, T1, T1ce, T2 (loosely after real MR contrasts).
_TISSUE_INTENSITY = {
    "wm": (0.70, 1.00, 1.00, 0.60),
    "gm": (0.85, 0.75, 0.78, 0.80),
    "csf": (0.25, 0.30, 0.30, 1.60),
    "edema": (1.50, 0.60, 0.62, 1.30),
    "enhancing": (1.10, 0.70, 1.70, 1.00),
    "necrosis": (0.90, 0.35, 0.25, 1.50),
}


def _smooth_noise(coords: Sequence[np.ndarray], rng: np.random.Generator, scale_mm: float,
                  n_waves: int = 6) -> np.ndarray:
    """Smooth random field in about ``[-1, 1]``: a sum of a few random plane waves of wavelength
    ~``scale_mm`` (cheap, exactly smooth and independent of the grid)."""
    field = np.zeros(np.broadcast_shapes(*(c.shape for c in coords)), dtype=np.float32)
    for _ in range(n_waves):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        k = 2 * np.pi / (scale_mm * rng.uniform(0.7, 1.4))
        phase = rng.uniform(0, 2 * np.pi)
        field += np.cos(k * (direction[0] * coords[0] + direction[1] * coords[1] + direction[2] * coords[2]) + phase)
    return field / np.sqrt(n_waves / 2)


def make_phantom_case(
    shape: Sequence[int] = (48, 56, 48),
    spacing: Sequence[float] = (1.2, 1.0, 1.0),
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one phantom in memory.

    Anatomy is sized in mm from the field of view ``shape * spacing``, so it looks the same at any
    resolution; intensities are arbitrary MR-like units (> 0 inside the brain, exactly 0 outside).

    Args:
        shape: ``(Z, Y, X)`` voxels (each >= 16 recommended).
        spacing: ``(sz, sy, sx)`` mm.
        rng: generator (required; the case is a deterministic function of its state).

    Returns:
        ``(image (4, Z, Y, X) float32, label (Z, Y, X) uint8)`` with channels FLAIR, T1, T1ce, T2 and
        label values 0, 1 (necrosis), 2 (oedema), 4 (enhancing); the tumour lies inside the brain.
    """
    if rng is None:
        raise ValueError("pass rng=np.random.default_rng(seed)")
    shape = tuple(int(s) for s in shape)
    spacing = np.asarray(spacing, dtype=np.float64)
    extent = np.asarray(shape) * spacing
    # Centred mm coordinates as broadcastable 1-D axes (no full grids until needed).
    coords = [((np.arange(n) - (n - 1) / 2) * s).astype(np.float32).reshape([-1 if a == i else 1 for a in range(3)])
              for i, (n, s) in enumerate(zip(shape, spacing))]
    # The steps draw from rng in this order; keep it, or every phantom changes.
    brain, gm, csf, semi, centre = _anatomy(coords, shape, extent, rng)
    label = _tumour_label(coords, shape, semi, centre, brain, rng)
    image = _paint_tissues(shape, brain, gm, csf, label)
    _scan_effects(image, coords, spacing, extent, rng)
    image[:, ~brain] = 0.0  # skull-stripped: background exactly 0
    return image, label


def _anatomy(coords: Sequence[np.ndarray], shape: tuple[int, ...], extent: np.ndarray, rng: np.random.Generator):
    """Brain ellipsoid with a wobbling radius (gyri-like), its grey-matter rim and two ventricles.

    Returns:
        ``(brain, gm, csf, semi, centre)``: three ``(Z, Y, X)`` bool masks, the brain's semi-axes and
        centre in mm.
    """
    semi = extent * rng.uniform(0.38, 0.44, size=3)
    centre = extent * rng.uniform(-0.02, 0.02, size=3)
    rel = [(c - m) / a for c, m, a in zip(coords, centre, semi)]
    r = np.sqrt(rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2)
    r = r * (1 + 0.04 * _smooth_noise(coords, rng, scale_mm=0.5 * semi.min()))
    brain = r < 1.0
    gm = brain & (r > rng.uniform(0.78, 0.84))
    csf = np.zeros(shape, dtype=bool)
    for side in (-1, 1):  # two ventricles either side of the midline (X)
        off = np.array([0.05, 0.05, side * 0.18]) * semi
        vsemi = semi * np.array([0.16, 0.35, 0.08]) * rng.uniform(0.85, 1.15, size=3)
        vr = sum(((c - m - o) / a) ** 2 for c, m, o, a in zip(coords, centre, off, vsemi))
        csf |= vr < 1.0
    return brain, gm, csf, semi, centre


def _tumour_label(coords: Sequence[np.ndarray], shape: tuple[int, ...], semi: np.ndarray, centre: np.ndarray,
                  brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(Z, Y, X)`` uint8 BraTS labels of a tumour inside ``brain``.

    The normalised distance to a union of 2-4 spheres, perturbed by smooth noise; thresholds on the same
    field give nested, irregular regions (necrosis < enhancing < oedema).
    """
    r0 = semi.min() * rng.uniform(0.4, 0.6)
    t_dir = rng.normal(size=3)
    t_dir /= np.linalg.norm(t_dir)
    t_centre = centre + t_dir * semi * rng.uniform(0.0, 0.4)
    dist = np.full(shape, np.inf, dtype=np.float32)
    for k in range(int(rng.integers(2, 5))):
        c = t_centre + (rng.normal(size=3) * 0.35 * r0 if k else 0.0)
        rad = r0 * rng.uniform(0.7, 1.0)
        d = np.sqrt(sum((ax - ci) ** 2 for ax, ci in zip(coords, c))) / rad
        dist = np.minimum(dist, d)
    dist = dist + 0.12 * _smooth_noise(coords, rng, scale_mm=r0)
    necrosis = dist < rng.uniform(0.3, 0.42)
    core = dist < rng.uniform(0.5, 0.62)
    edema = dist < 1.0

    label = np.zeros(shape, dtype=np.uint8)
    label[edema] = LABELS["edema"]
    label[core] = LABELS["enhancing"]
    label[necrosis] = LABELS["necrosis"]
    label[~brain] = 0
    return label


def _paint_tissues(shape: tuple[int, ...], brain: np.ndarray, gm: np.ndarray, csf: np.ndarray,
                   label: np.ndarray) -> np.ndarray:
    """``(4, Z, Y, X)`` float32 noise-free intensities: each tissue's contrasts, painted in increasing priority."""
    image = np.zeros((4,) + shape, dtype=np.float32)
    for mask, tissue in (
        (brain, "wm"), (gm, "gm"), (csf & brain, "csf"),
        (label == 2, "edema"), (label == 4, "enhancing"), (label == 1, "necrosis"),
    ):
        image[:, mask] = np.asarray(_TISSUE_INTENSITY[tissue], dtype=np.float32)[:, None]
    return image


def _scan_effects(image: np.ndarray, coords: Sequence[np.ndarray], spacing: np.ndarray, extent: np.ndarray,
                  rng: np.random.Generator) -> None:
    """In place: per-tissue texture and ~0.8 mm partial-volume blur, then per-channel gain, smooth bias field and
    Rician noise (magnitude of complex Gaussian noise, so intensities are > 0 almost surely)."""
    shape = image.shape[1:]
    texture = 1 + 0.05 * _smooth_noise(coords, rng, scale_mm=4.0)
    sigma = 0.8 / spacing  # ~0.8 mm blur in voxels per axis
    gains = rng.uniform(300.0, 600.0, size=4)
    for ch in range(4):
        image[ch] = ndimage.gaussian_filter(image[ch] * texture, sigma=sigma, mode="constant")
        bias = np.exp(0.15 * _smooth_noise(coords, rng, scale_mm=2.0 * extent.max(), n_waves=3))
        image[ch] *= gains[ch] * bias
        noise_sd = 0.03 * gains[ch]
        real = image[ch] + rng.normal(0.0, noise_sd, size=shape).astype(np.float32)
        imag = rng.normal(0.0, noise_sd, size=shape).astype(np.float32)
        image[ch] = np.sqrt(real * real + imag * imag)


def phantom_geometry(shape: Sequence[int], spacing: Sequence[float], rng: np.random.Generator) -> ImageGeometry:
    """A NIfTI geometry for a ``(Z, Y, X)`` volume: ``spacing`` (sz, sy, sx) mm, a rotation of up to
    5 degrees about a random axis, origin so the volume centre is near world (0, 0, 0); qform and
    sform codes 1 (scanner)."""
    z, y, x = (int(s) for s in shape)
    sz, sy, sx = (float(s) for s in spacing)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(-5.0, 5.0))
    kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx  # Rodrigues
    lin = rot @ np.diag([sx, sy, sz])  # voxel (i, j, k) = (x, y, z) columns
    affine = np.eye(4)
    affine[:3, :3] = lin
    affine[:3, 3] = -lin @ ((np.array([x, y, z]) - 1) / 2) + rng.uniform(-5, 5, size=3)
    header = nib.Nifti1Header()
    header.set_data_shape((x, y, z))
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm")
    return ImageGeometry(affine, (x, y, z), header)


def make_phantom_dataset(
    out_dir: str | Path,
    n_cases: int = 12,
    shape: Sequence[int] = (48, 56, 48),
    seed: int = 0,
    spacing: Sequence[float] = (1.2, 1.0, 1.0),
) -> Path:
    """Write an nnU-Net v2 style dataset of phantoms.

    Layout: ``out_dir/dataset.json``, ``imagesTr/phantom_XXX_000C.nii.gz`` (C = 0..3: FLAIR, T1,
    T1ce, T2; float32) and ``labelsTr/phantom_XXX.nii.gz`` (uint8, values 0/1/2/4). Case ``i`` depends
    only on ``(seed, i)``, so the files are byte-identical across runs and across ``n_cases``.

    Args:
        out_dir: dataset folder to create (existing phantom files are overwritten).
        n_cases: number of cases.
        shape: ``(Z, Y, X)`` voxels per case.
        seed: base seed.
        spacing: ``(sz, sy, sx)`` mm.

    Returns:
        ``out_dir`` as a ``Path``.
    """
    out = Path(out_dir)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    for i in range(n_cases):
        rng = np.random.default_rng([seed, i])
        image, label = make_phantom_case(shape, spacing, rng)
        geometry = phantom_geometry(shape, spacing, rng)
        case_id = f"phantom_{i:03d}"
        for c in range(image.shape[0]):
            write_volume(image[c], geometry, out / "imagesTr" / f"{case_id}_{c:04d}.nii.gz", dtype=np.float32)
        write_volume(label, geometry, out / "labelsTr" / f"{case_id}.nii.gz", dtype=np.uint8)
    dataset = {
        "name": "Phantom",
        "description": "Synthetic BraTS-like brain tumour phantoms (voxseg.data.phantoms)",
        "channel_names": dict(CHANNEL_NAMES),
        "labels": dict(LABELS),
        "numTraining": int(n_cases),
        "file_ending": ".nii.gz",
    }
    (out / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")
    return out
