"""A known prediction pushed through the whole way there and back: reorientation, crop to the nonzero box,
resampling, sliding window, and the way back to the file's own voxel grid. A stand-in network whose answer is
known (foreground wherever the normalised intensity is above the brain's mean) segments a scan whose labels are
known, stored in a non-RAS voxel order with anisotropic spacing and a zero border; the labels must land on the
reference voxels: exactly without resampling, and with Dice close to 1 with it (a flip, a transposition or an
off-by-the-crop shift anywhere on the way scores far lower)."""
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from voxseg.config import RunPlan, TrainConfig
from voxseg.data import PreprocessConfig
from voxseg.infer import predict_case
from voxseg.io import Case

SPACING_IJK = (1.0, 2.5, 1.5)  # mm along the RAS-ordered i, j, k axes


class _AboveMean(torch.nn.Module):
    """``(N, 1, *S)`` z-scored image -> ``(N, 2, *S)`` logits: class 1 where the intensity is above 0 (the mean
    inside the nonzero mask, which the lesion is and the rest of the brain is not), class 0 elsewhere."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Conv3d(1, 1, 1)  # gives the module a device and a dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        above = (x[:, :1] > 0).to(x.dtype)
        return torch.cat([1 - above, above], dim=1) * 20 - 10


def _scan(root: Path, code: str) -> tuple[Case, Path]:
    """A 1-channel scan and its label, stored in voxel order ``code``: a zero border (cropped away), a brain box of
    intensity 1 and an off-centre ellipsoidal lesion of intensity 3 (label 1)."""
    shape = (18, 14, 22)
    i, j, k = np.ogrid[tuple(slice(0, s) for s in shape)]
    brain = np.zeros(shape, dtype=bool)
    brain[3:15, 2:12, 4:19] = True
    lesion = ((i - 10) / 3.5) ** 2 + ((j - 8) / 2.2) ** 2 + ((k - 8) / 3.5) ** 2 <= 1
    image = np.where(lesion, 3.0, np.where(brain, 1.0, 0.0)).astype(np.float32)
    affine = np.diag([*SPACING_IJK, 1.0])
    affine[:3, 3] = [-7.0, 12.0, 3.0]
    ornt = nib.orientations.ornt_transform(nib.io_orientation(affine), nib.orientations.axcodes2ornt(tuple(code)))
    root.mkdir(parents=True, exist_ok=True)
    stored = nib.Nifti1Image(image, affine).as_reoriented(ornt)
    assert "".join(nib.aff2axcodes(stored.affine)) == code
    nib.save(stored, root / "scan_0000.nii.gz")
    nib.save(nib.Nifti1Image(lesion.astype(np.uint8), affine).as_reoriented(ornt), root / "scan.nii.gz")
    return Case("scan", [root / "scan_0000.nii.gz"], root / "scan.nii.gz"), root / "scan.nii.gz"


def _plan(target_spacing) -> RunPlan:
    preprocess = PreprocessConfig(orientation="RAS", crop_to_nonzero=True, target_spacing=target_spacing)
    return RunPlan(channel_names=["MR"], label_values=[0, 1], preprocess=preprocess,
                   train=TrainConfig(patch_size=[8, 8, 8]))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("code", ["PIL", "LPS", "SRA"])
@pytest.mark.parametrize("target_spacing", [None, (1.5, 1.5, 1.5)])
def test_a_known_prediction_lands_on_the_reference_voxels(tmp_path, code, target_spacing):
    case, label_path = _scan(tmp_path / "data", code)
    out = tmp_path / "pred.nii.gz"
    predict_case(_AboveMean(), _plan(target_spacing), case, out)
    pred_img, ref_img = nib.load(out), nib.load(label_path)
    assert pred_img.shape == ref_img.shape
    np.testing.assert_allclose(pred_img.affine, ref_img.affine)
    pred, ref = np.asarray(pred_img.dataobj), np.asarray(ref_img.dataobj)
    if target_spacing is None:
        np.testing.assert_array_equal(pred, ref)  # no interpolation anywhere: exact
    else:
        assert _dice(pred > 0, ref > 0) > 0.85  # resampled there and back (a wrong turn scores < 0.5)
