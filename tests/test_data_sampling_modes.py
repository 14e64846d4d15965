"""Tests for the sampling modes in voxseg.data.sampling: slice selection, minicubes and slice-restricted patch
placement (2.5-D stacks and modality subsets: tests/test_data_network_input.py)."""
from __future__ import annotations

import numpy as np
import pytest

from voxseg.data.sampling import PatchSampler, minicube_partition, minicube_starts, select_slices


def test_select_slices_counts_foreground_plus_nearest_background():
    label = np.zeros((30, 4, 4), np.uint8)
    label[10:15, 1, 1] = 1
    assert select_slices(label, 0).tolist() == [10, 11, 12, 13, 14]
    assert select_slices(label, 4).tolist() == [8, 9, 10, 11, 12, 13, 14, 15, 16]
    assert len(select_slices(label, 3)) == 8
    assert len(select_slices(label, 100)) == 30
    assert len(select_slices(np.zeros((10, 2, 2)), 4)) == 4


def test_sampler_restricted_to_selected_slices():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 20, 8, 8)).astype(np.float32)
    label = np.zeros((20, 8, 8), np.uint8)
    label[5, 2, 2] = 1
    chosen = select_slices(label, 2)
    sampler = PatchSampler(image, label, (1, 4, 4), rng=rng, slices=chosen)
    zs = {sampler.sample_start(False)[0] for _ in range(200)}
    assert zs == set(chosen.tolist())
    with pytest.raises(ValueError):
        PatchSampler(image, label, (1, 4, 4), rng=rng, slices=[25])


@pytest.mark.parametrize("shape,cube", [((160, 192, 192), (80, 96, 96)), ((7, 9, 10), (3, 4, 5))])
def test_minicubes_cover_the_volume_exactly_once(shape, cube):
    image = np.ones((1,) + shape, np.float32)
    label = np.ones(shape, np.uint8)
    cubes = minicube_partition(image, label, cube)
    starts = minicube_starts(shape, cube)
    assert len(cubes) == len(starts) == int(np.prod([-(-n // c) for n, c in zip(shape, cube)]))
    count = np.zeros(tuple(-(-n // c) * c for n, c in zip(shape, cube)), np.int32)
    for (img, lbl), st in zip(cubes, starts):
        assert img.shape == (1,) + tuple(cube) and lbl.shape == tuple(cube)
        count[tuple(slice(s, s + c) for s, c in zip(st, cube))] += lbl
    assert (count[tuple(slice(0, n) for n in shape)] == 1).all() and count.sum() == np.prod(shape)


def test_minicubes_with_context_have_the_core_in_the_middle():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 16, 12, 12)).astype(np.float32)
    label = rng.integers(0, 3, (16, 12, 12)).astype(np.uint8)
    cubes = minicube_partition(image, label, (8, 6, 6), context=4)
    assert len(cubes) == 8
    for (img, lbl), st in zip(cubes, minicube_starts(label.shape, (8, 6, 6))):
        assert img.shape == (2, 12, 10, 10) and lbl.shape == (8, 6, 6)
        core = img[:, 2:10, 2:8, 2:8]
        np.testing.assert_array_equal(core, image[:, st[0]:st[0] + 8, st[1]:st[1] + 6, st[2]:st[2] + 6])
    assert not cubes[0][0][:, :2].any()  # context before the first cube is beyond the volume: 0
    again = minicube_partition(image, label, (8, 6, 6), context=4)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(cubes, again))  # deterministic


def test_training_minicubes_are_cached_memory_mapped_and_remade_for_other_settings(tmp_path):
    from voxseg.data import PreparedCase, cached_minicubes

    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 12, 10, 9)).astype(np.float32)
    label = rng.integers(0, 3, size=(12, 10, 9)).astype(np.uint8)
    case = PreparedCase("c1", image, label)
    cubes = cached_minicubes([case], [8, 6, 6], 4, tmp_path, "settings-a")
    expected = minicube_partition(image, None, (8, 6, 6), 4)
    expected_labels = minicube_partition(label[None], None, (8, 6, 6), 4)
    assert len(cubes) == len(expected) == 8
    for got, (img, _), (lbl, _) in zip(cubes, expected, expected_labels):
        assert isinstance(got.image, np.memmap) and got.label.dtype == np.uint8
        np.testing.assert_array_equal(got.image, img)
        np.testing.assert_array_equal(got.label, lbl[0])
    first = tmp_path / "c1#cube0.image.npy"
    before = first.stat().st_mtime_ns
    again = cached_minicubes([case], [8, 6, 6], 4, tmp_path, "settings-a")  # reused, not rewritten
    assert first.stat().st_mtime_ns == before and [c.case_id for c in again] == [c.case_id for c in cubes]
    other = cached_minicubes([case], [8, 6, 6], 0, tmp_path, "settings-a")  # other context: remade
    assert other[0].image.shape == (2, 8, 6, 6)
    np.testing.assert_array_equal(other[0].image, image[:, :8, :6, :6])
