"""Tests for voxseg.data.phantoms: determinism, label values, contrasts, dataset layout and geometry."""
from __future__ import annotations

import json

import numpy as np

from voxseg.data.phantoms import make_phantom_case, make_phantom_dataset
from voxseg.io.image import read_volume


def test_case_is_deterministic_and_well_formed():
    shape, spacing = (32, 36, 30), (1.2, 1.0, 1.0)
    image, label = make_phantom_case(shape, spacing, np.random.default_rng(5))
    again, label2 = make_phantom_case(shape, spacing, np.random.default_rng(5))
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(label, label2)
    assert image.shape == (4,) + shape and image.dtype == np.float32
    assert label.shape == shape and label.dtype == np.uint8
    assert set(np.unique(label).tolist()) == {0, 1, 2, 4}
    brain = image[0] > 0
    assert (image[:, ~brain] == 0).all() and (image[:, brain] > 0).all()  # skull-stripped
    assert brain[label > 0].all()  # the tumour lies inside the brain
    assert not brain[0].any() and not brain[-1].any()  # and the brain inside the field of view


def test_each_subregion_stands_out_in_some_channel():
    image, label = make_phantom_case((48, 56, 48), (1.2, 1.0, 1.0), np.random.default_rng(0))
    flair, t1, t1ce, t2 = image
    healthy = (label == 0) & (flair > 0)

    def mean(ch, mask):
        return float(ch[mask].mean())

    assert mean(flair, label == 2) > 1.4 * mean(flair, healthy)  # oedema bright in FLAIR
    assert mean(t2, label == 2) > 1.4 * mean(t2, healthy)  # ... and in T2
    assert mean(t1ce, label == 4) > 1.3 * mean(t1ce, label == 2)  # enhancing rim bright in T1ce
    assert mean(t1ce, label == 1) < 0.7 * mean(t1ce, label == 4)  # necrosis dark in T1ce


def test_different_seeds_differ():
    a = make_phantom_case((24, 24, 24), (1, 1, 1), np.random.default_rng(0))[1]
    b = make_phantom_case((24, 24, 24), (1, 1, 1), np.random.default_rng(1))[1]
    assert not np.array_equal(a, b)


def test_dataset_layout_json_geometry_and_bytes(tmp_path):
    shape, spacing = (24, 28, 20), (1.2, 1.0, 0.9)
    root = make_phantom_dataset(tmp_path / "ds", n_cases=2, shape=shape, seed=3, spacing=spacing)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}
    assert meta["labels"] == {"background": 0, "necrosis": 1, "edema": 2, "enhancing": 4}
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz"
    images = sorted(p.name for p in (root / "imagesTr").iterdir())
    assert images == [f"phantom_00{i}_000{c}.nii.gz" for i in range(2) for c in range(4)]
    assert sorted(p.name for p in (root / "labelsTr").iterdir()) == ["phantom_000.nii.gz", "phantom_001.nii.gz"]

    label, geo = read_volume(root / "labelsTr" / "phantom_001.nii.gz", dtype=None)
    image, geo_img = read_volume(root / "imagesTr" / "phantom_001_0002.nii.gz")
    assert label.shape == image.shape == shape and label.dtype == np.uint8
    assert set(np.unique(label).tolist()) == {0, 1, 2, 4}
    np.testing.assert_allclose(geo.spacing, spacing, rtol=1e-5)
    np.testing.assert_allclose(geo.affine, geo_img.affine)
    assert not np.allclose(geo.affine[:3, :3], np.diag(np.diag(geo.affine[:3, :3])))  # rotated
    assert int(geo.header["qform_code"]) == 1 and int(geo.header["sform_code"]) == 1
    # In-memory case i equals the files written for case i.
    mem_img, mem_lbl = make_phantom_case(shape, spacing, np.random.default_rng([3, 1]))
    np.testing.assert_array_equal(mem_lbl, label)
    np.testing.assert_array_equal(mem_img[2], image)

    again = make_phantom_dataset(tmp_path / "again", n_cases=2, shape=shape, seed=3, spacing=spacing)
    for sub in ("imagesTr", "labelsTr"):
        for p in (root / sub).iterdir():
            assert p.read_bytes() == (again / sub / p.name).read_bytes()
    assert (root / "dataset.json").read_bytes() == (again / "dataset.json").read_bytes()


def test_default_dataset_has_every_channel_file(tmp_path):
    make_phantom_dataset(tmp_path / "ds")
    assert len(list((tmp_path / "ds" / "imagesTr").iterdir())) == 48
