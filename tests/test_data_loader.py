"""Tests for voxseg.data.loader.PatchLoader: the same batches in-process and in workers, resume,
clean shutdown (also when the consumer stops early), error reporting and the wait counter."""
from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from voxseg.data.augment import AugmentConfig, Augmenter, build_augmentation
from voxseg.data.loader import PatchLoader


def _cases(n=3, shape=(10, 12, 14), channels=2):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        label = np.zeros(shape, np.uint8)
        z, y, x = (int(rng.integers(0, s - 2)) for s in shape)
        label[z:z + 2, y:y + 2, x:x + 2] = 1 + int(rng.integers(2))
        out.append((rng.normal(size=(channels,) + shape).astype(np.float32), label))
    return out


def _all(loader):
    with loader:
        return list(loader)


@pytest.mark.parametrize("mode,patch,x_shape", [("3d", (6, 6, 6), (3, 2, 6, 6, 6)), ("2d", (8, 8), (3, 2, 8, 8)),
                                                 ("2.5d", (8, 8), (3, 6, 8, 8))])
def test_same_batches_with_zero_and_one_worker(mode, patch, x_shape):
    aug = build_augmentation(AugmentConfig().replace(rotation=0.5, elastic=0.5))
    kw = dict(batch_size=3, augment=aug, seed=11, mode=mode, num_batches=4)
    a = _all(PatchLoader(_cases(), patch, num_workers=0, **kw))
    b = _all(PatchLoader(_cases(), patch, num_workers=1, prefetch=2, **kw))
    assert len(a) == len(b) == 4
    for (xa, ya), (xb, yb) in zip(a, b):
        assert xa.shape == x_shape and xa.dtype == np.float32 and ya.shape == x_shape[:1] + x_shape[2:]
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert all(ya[0].any() for _, ya in a)  # the first item of each batch is forced onto foreground
    assert not np.array_equal(a[0][0], a[1][0])


def test_two_workers_and_plain_crops_match_in_process():
    a = _all(PatchLoader(_cases(), (6, 6, 6), 2, num_workers=0, seed=3, num_batches=5))
    b = _all(PatchLoader(_cases(), (6, 6, 6), 2, num_workers=2, seed=3, num_batches=5))
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_resume_continues_the_sequence():
    full = _all(PatchLoader(_cases(), (6, 6, 6), 2, num_workers=0, seed=5, num_batches=6))
    first = PatchLoader(_cases(), (6, 6, 6), 2, num_workers=1, seed=5)
    with first:
        for _ in range(3):
            next(first)
        state = first.state_dict()
    assert state == {"next_batch": 3, "seed": 5}
    resumed = PatchLoader(_cases(), (6, 6, 6), 2, num_workers=1, seed=5, num_batches=6)
    resumed.load_state_dict(state)
    rest = _all(resumed)
    assert len(rest) == 3
    for (xa, _), (xb, _) in zip(full[3:], rest):
        np.testing.assert_array_equal(xa, xb)
    with pytest.raises(ValueError):
        resumed.load_state_dict({"next_batch": 0, "seed": 6})


def _workers() -> list:
    """The loader worker processes alive in this process's children."""
    return [p for p in mp.active_children() if p.name.startswith("voxseg-loader")]


def test_clean_shutdown_when_the_consumer_stops_early():
    loader = PatchLoader(_cases(), (6, 6, 6), 2, num_workers=2, prefetch=3, seed=0)
    with loader:
        for i, _ in enumerate(loader):
            if i == 1:
                break
        procs = _workers()
        assert len(procs) == 2 and all(p.is_alive() for p in procs)
    assert not any(p.is_alive() for p in procs)
    assert all(p.exitcode is not None for p in procs)  # reaped: no zombies
    assert not _workers()
    loader.close()  # idempotent


def test_wait_seconds_is_reported():
    loader = PatchLoader(_cases(), (6, 6, 6), 2, num_workers=1, seed=0, num_batches=3)
    assert loader.wait_seconds == 0.0
    _all(loader)
    assert loader.wait_seconds > 0.0


class _Broken(Augmenter):
    def extract(self, *args, **kwargs):
        raise ValueError("boom")


def test_worker_errors_reach_the_consumer():
    loader = PatchLoader(_cases(), (6, 6, 6), 2, augment=_Broken([]), num_workers=1, seed=0)
    with pytest.raises(RuntimeError, match="boom"):
        with loader:
            next(loader)
    assert not _workers()


def test_channel_subset_and_argument_checks(tmp_path):
    x, _ = next(PatchLoader(_cases(), (6, 6, 6), 2, num_workers=0, channels=[1]))
    assert x.shape == (2, 1, 6, 6, 6)
    # Consecutive channels of a memory-mapped case stay mapped (a view); others are one copy, in their order.
    image, label = _cases(n=1, channels=4)[0]
    np.save(tmp_path / "image.npy", image)
    mapped = np.load(tmp_path / "image.npy", mmap_mode="r")
    for channels, shared in (([2], True), ([1, 2, 3], True), ([3, 1], False), ([0, 2], False)):
        loader = PatchLoader([(mapped, label)], (6, 6, 6), 1, num_workers=0, channels=channels)
        kept = loader.cases[0][0]
        assert np.shares_memory(kept, mapped) == shared, channels
        np.testing.assert_array_equal(kept, image[channels])
    with pytest.raises(ValueError):
        PatchLoader(_cases(), (6, 6), 2, mode="3d")
    with pytest.raises(ValueError):
        PatchLoader(_cases(), (6, 6), 2, mode="2.5d", slices=2)
