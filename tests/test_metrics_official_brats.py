"""Oracle: the BraTS organisers' official evaluation package (``brats-evaluation``, panoptica-based) on real
BraTS volumes, against ``voxseg evaluate``'s region Dice (equal) and surface distances (the package's
pooled HD95 recomputed from ours is equal; voxseg's own HD95 is the max of the directed 95th percentiles).

It is not a test extra because it cannot share this project's environment: brats-evaluation 0.0.10 needs
panoptica (>= 2.1.0), and every panoptica release up to 2.1.7 requires ``numpy>=1.22,<2.3``, while the
project's environment (and CI's) has numpy 2.4: installing it there would downgrade numpy under torch and
scipy. It pulls in neither torch nor torchvision (panoptica's torch is an optional ``gpu`` extra). Run it from
its own environment:

    python -m venv /tmp/bratseval
    /tmp/bratseval/bin/pip install "numpy<2.3" brats-evaluation==0.0.10
    VOXSEG_BRATS_EVAL_PYTHON=/tmp/bratseval/bin/python python -m pytest tests/test_metrics_official_brats.py

It also needs the real BraTS 2018 sample in ../shared/data/brats2018. Without either, the test skips and its
reason says which is missing and how to run it.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from voxseg.metrics import evaluate_folders, surface_distances

BRATS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats2018"
CASES = ["Brats18_2013_11_1", "Brats18_CBICA_ABM_1"]


def _official_python() -> str | None:
    env = os.environ.get("VOXSEG_BRATS_EVAL_PYTHON")
    if env:
        return env
    return sys.executable if importlib.util.find_spec("brats_evaluation") else None


def _prediction_from(reference: np.ndarray, seed: int) -> np.ndarray:
    """A plausible, imperfect segmentation made from the reference (2023+ labels 1 NCR, 2 ED, 3 ET):
    oedema shifted by 2 voxels, enhancing tumour dilated once, necrosis eroded once, one false-positive blob."""
    rng = np.random.default_rng(seed)
    out = np.zeros_like(reference)
    out[np.roll(reference == 2, 2, axis=0)] = 2
    out[ndimage.binary_dilation(reference == 3)] = 3
    out[ndimage.binary_erosion(reference == 1)] = 1
    centre = [int(rng.integers(20, s - 20)) for s in reference.shape]
    zz, yy, xx = np.ogrid[tuple(slice(0, s) for s in reference.shape)]
    blob = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= 5 ** 2
    out[blob & (reference == 0)] = 2
    return out


@pytest.mark.skipif(not BRATS.exists(), reason="../shared/data/brats2018 not present")
@pytest.mark.skipif(_official_python() is None, reason=(
    "official BraTS evaluation not found: brats-evaluation 0.0.10 needs panoptica, which requires numpy < 2.3, "
    "so it cannot be installed beside voxseg; run it from its own venv: python -m venv /tmp/bratseval && "
    "/tmp/bratseval/bin/pip install 'numpy<2.3' brats-evaluation==0.0.10, then set "
    "VOXSEG_BRATS_EVAL_PYTHON=/tmp/bratseval/bin/python"))
def test_region_dice_and_hd95_match_the_official_brats_evaluation(tmp_path):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    for i, case in enumerate(CASES):
        img = nib.load(BRATS / case / f"{case}_seg.nii.gz")
        ref = np.asarray(img.dataobj).astype(np.uint8)
        ref[ref == 4] = 3  # the official configs use the 2023+ labels (ET = 3)
        name = f"BraTS-GLI-{i + 1:05d}-000.nii.gz"  # the official script matches files by this id pattern
        nib.save(nib.Nifti1Image(ref, img.affine, img.header), ref_dir / name)
        nib.save(nib.Nifti1Image(_prediction_from(ref, i), img.affine, img.header), pred_dir / name)

    summary_json = tmp_path / "official.json"
    subprocess.run([_official_python(), "-m", "brats_evaluation.evaluation", "--ref_path", str(ref_dir), "--pred_path",
                    str(pred_dir), "--config", "gli", "--summary_json", str(summary_json)], check=True,
                   capture_output=True, text=True)
    official = {m["subject_name"].removesuffix(".nii.gz"): m for m in json.loads(summary_json.read_text())["metrics"]}
    assert len(official) == len(CASES) and not any("error" in m for m in official.values())

    rows, _ = evaluate_folders(pred_dir, ref_dir, tmp_path / "voxseg", {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]},
                               progress=False)
    values = {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}
    checked = 0
    for row in rows:
        case, structure = row["case_id"], row["structure"]
        theirs = official[case][structure.lower()]
        assert row["dice"] == pytest.approx(theirs["global_bin_dsc"], abs=1e-6), (case, structure)
        # HD95 definitions differ: the package (panoptica) takes the 95th percentile of both directions'
        # surface distances pooled; voxseg reports the larger of the two directed 95th percentiles (MONAI,
        # and the BraTS 2023 code's surface-distance package), which is never smaller. The surface
        # distances themselves must agree: pooling ours reproduces their figure.
        ref = np.isin(np.asarray(nib.load(ref_dir / f"{case}.nii.gz").dataobj), values[structure])
        pred = np.isin(np.asarray(nib.load(pred_dir / f"{case}.nii.gz").dataobj), values[structure])
        pooled = np.percentile(np.hstack(surface_distances(pred, ref, (1.0, 1.0, 1.0))), 95)
        assert pooled == pytest.approx(theirs["global_bin_hd95"], abs=1e-6), (case, structure)
        assert row["hd95_mm"] >= theirs["global_bin_hd95"] - 1e-6
        checked += 1
    assert checked == 3 * len(CASES)
