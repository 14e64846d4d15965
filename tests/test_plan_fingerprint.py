"""Dataset fingerprint: spacing and shape ranges of a run's cases, and the spacing check prediction uses."""
import json

import pytest

from voxseg.data.fingerprint import FINGERPRINT_NAME, DatasetFingerprint, dataset_fingerprint


def test_ranges_are_per_axis():
    fp = dataset_fingerprint([(3.0, 1.0, 1.0), (1.5, 0.8, 0.8), (2.0, 1.0, 0.9)],
                             [(40, 200, 210), (80, 256, 256), (60, 220, 230)])
    assert fp.n_cases == 3
    assert fp.spacing_min == [1.5, 0.8, 0.8] and fp.spacing_median == [2.0, 1.0, 0.9]
    assert fp.spacing_max == [3.0, 1.0, 1.0]
    assert fp.shape_min == [40, 200, 210] and fp.shape_median == [60, 220, 230] and fp.shape_max == [80, 256, 256]
    with pytest.raises(ValueError):
        dataset_fingerprint([], [])


def test_spacing_problem_names_the_axes_outside_the_range():
    fp = dataset_fingerprint([(1.5, 0.84, 0.84), (1.5, 1.0, 1.0)], [(128, 256, 256)] * 2)
    assert fp.spacing_problem((1.5, 0.9, 0.9)) is None
    assert fp.spacing_problem((1.5 * 1.2, 1.0 * 1.2, 0.84 / 1.2)) is None  # within the 1.25 tolerance
    problem = fp.spacing_problem((1.0, 1.0, 1.0))
    assert problem is not None and "along z," in problem and "1.5 x 0.84-1 x 0.84-1 mm" in problem
    assert "along z, y" not in fp.spacing_problem((1.0, 0.9, 2.0)) and "along z, x" in fp.spacing_problem(
        (1.0, 0.9, 2.0))


def test_save_load_round_trip_and_fold_folders(tmp_path):
    fp = dataset_fingerprint([(1.0, 1.0, 1.0)], [(10, 12, 14)])
    fp.save(tmp_path)
    assert json.loads((tmp_path / FINGERPRINT_NAME).read_text())["shape_max"] == [10, 12, 14]
    assert DatasetFingerprint.load(tmp_path) == fp
    (tmp_path / "fold_0").mkdir()
    assert DatasetFingerprint.load(tmp_path / "fold_0") == fp  # a fold reads its cross-validation run's
    assert DatasetFingerprint.load(tmp_path / "fold_0" / "elsewhere") is None


def test_write_atomic_leaves_nothing_when_writing_fails(tmp_path):
    import pytest

    from voxseg.io.files import write_atomic

    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def fails(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, fails)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    write_atomic(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
