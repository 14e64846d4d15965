"""Datasets of ../shared/data in nnU-Net's raw format (``nnUNet_raw/DatasetXXX_Name``), for
``benchmarks/nnunet_interop.py``: training cases in ``imagesTr`` / ``labelsTr``, the last ``held_out`` cases (sorted
by name) kept out as test cases.

- Hippocampus (Decathlon Task04, Simpson et al. 2019): one MRI channel, labels 0/1/2.
- BraTS 2018 (Menze et al. 2015; Bakas et al. 2017): FLAIR, T1, T1ce, T2; labels converted as nnU-Net's
  Dataset137 script does (oedema 2 -> 1, necrosis 1 -> 2, enhancing 4 -> 3) and trained as regions
  whole tumour {1, 2, 3}, tumour core {2, 3}, enhancing {3}, painted in that order.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from _heldout import SHARED_DATA

__all__ = ["RawDataset", "convert_brats", "convert_hippocampus"]


@dataclass
class RawDataset:
    id: int
    name: str
    test_cases: dict[str, list[str]] = field(default_factory=dict)


def _write(array_image: sitk.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(array_image, str(path), True)


def _dataset_json(folder: Path, channels: dict, labels: dict, n_train: int, **extra) -> None:
    data = {"channel_names": channels, "labels": labels, "numTraining": n_train, "file_ending": ".nii.gz", **extra}
    (folder / "dataset.json").write_text(json.dumps(data, indent=2))


def convert_hippocampus(raw: Path, held_out: int) -> RawDataset:
    source = SHARED_DATA / "hippocampus"
    folder = raw / "Dataset004_Hippocampus"
    names = sorted(p.name[:-len(".nii.gz")] for p in (source / "labels").glob("*.nii.gz"))
    train, test = names[:-held_out], names[-held_out:]
    result = RawDataset(4, folder.name)
    for name in names:
        image = sitk.Cast(sitk.ReadImage(str(source / "images" / f"{name}.nii.gz")), sitk.sitkFloat32)
        where = "imagesTr" if name in train else "imagesTs"
        _write(image, folder / where / f"{name}_0000.nii.gz")
        if name in train:
            label = sitk.Cast(sitk.ReadImage(str(source / "labels" / f"{name}.nii.gz")), sitk.sitkUInt8)
            label.CopyInformation(image)
            _write(label, folder / "labelsTr" / f"{name}.nii.gz")
        else:
            result.test_cases[name] = [str(folder / where / f"{name}_0000.nii.gz")]
    _dataset_json(folder, {"0": "MRI"}, {"background": 0, "Anterior": 1, "Posterior": 2}, len(train))
    return result


def convert_brats(raw: Path, held_out: int) -> RawDataset:
    source = SHARED_DATA / "brats2018"
    folder = raw / "Dataset137_BraTS2018"
    names = sorted(p.name for p in source.iterdir() if p.is_dir())
    train, test = names[:-held_out], names[-held_out:]
    result = RawDataset(137, folder.name)
    for name in names:
        where = "imagesTr" if name in train else "imagesTs"
        files = []
        for c, modality in enumerate(("flair", "t1", "t1ce", "t2")):
            path = folder / where / f"{name}_{c:04d}.nii.gz"
            _write(sitk.ReadImage(str(source / name / f"{name}_{modality}.nii.gz")), path)
            files.append(str(path))
        if name in train:
            seg = sitk.ReadImage(str(source / name / f"{name}_seg.nii.gz"))
            array = sitk.GetArrayFromImage(seg)
            new = np.zeros(array.shape, np.uint8)
            new[array == 4], new[array == 2], new[array == 1] = 3, 1, 2
            out = sitk.GetImageFromArray(new)
            out.CopyInformation(seg)
            _write(out, folder / "labelsTr" / f"{name}.nii.gz")
        else:
            result.test_cases[name] = files
    _dataset_json(folder, {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"},
                  {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]},
                  len(train), regions_class_order=[1, 2, 3])
    return result
