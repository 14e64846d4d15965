"""A model file never runs code when loaded: every path that reads a checkpoint (``voxseg predict``,
``voxseg train --resume``, ``voxseg train --init-from``) refuses a checkpoint whose pickle would call a function,
in one line naming the file, before anything in it runs and before anything is written; a truncated checkpoint
is said the same way. Through the CLI, in subprocesses, as a user meets it."""
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch

from voxseg.data.phantoms import make_phantom_dataset

TINY = ["--net-args", "base_width=4,depth=3", "--patch", "16x16x16", "--epochs", "1", "--iterations", "2",
        "--threads", "2"]


class _RunsCode:
    """Unpickling this calls ``Path.touch(marker)``: a stand-in for any code a hostile checkpoint runs."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "voxseg.cli", *map(str, args)], capture_output=True, text=True)


def _refused(result, path: pathlib.Path, problem: str) -> None:
    """Exit 2, one ``error:`` line naming ``path`` and ``problem``, no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert str(path) in errors[0] and problem in errors[0], errors[0]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return make_phantom_dataset(tmp_path_factory.mktemp("phantoms") / "ds", n_cases=4, shape=(20, 24, 20), seed=3)


@pytest.fixture(scope="module")
def trained(phantoms, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    result = _cli("train", phantoms, "--out", run, *TINY)
    assert result.returncode == 0, result.stderr
    return run


@pytest.fixture
def hostile(trained, tmp_path):
    """A copy of the trained run whose two checkpoints keep their weights but carry an object that runs code."""
    run, marker = tmp_path / "hostile", tmp_path / "MARKER"
    shutil.copytree(trained, run)
    for name in ("checkpoint_best.pt", "checkpoint_last.pt"):
        ckpt = torch.load(trained / name, weights_only=True)
        torch.save({**ckpt, "note": _RunsCode(marker)}, run / name)
    return run, marker


REFUSED = "holds objects other than tensors and plain values (refused without running them"


def test_predict_refuses_a_checkpoint_that_would_run_code(hostile, phantoms, tmp_path):
    run, marker = hostile
    out = tmp_path / "pred"
    _refused(_cli("predict", run, phantoms, out), run / "checkpoint_best.pt", REFUSED)
    assert not marker.exists() and not out.exists()


def test_resume_refuses_a_checkpoint_that_would_run_code(hostile, phantoms):
    run, marker = hostile
    before = sorted(p.name for p in run.iterdir())
    _refused(_cli("train", phantoms, "--out", run, "--resume"), run / "checkpoint_last.pt", REFUSED)
    assert not marker.exists()
    assert sorted(p.name for p in run.iterdir()) == before


def test_init_from_refuses_a_checkpoint_that_would_run_code(hostile, phantoms, tmp_path):
    run, marker = hostile
    new = tmp_path / "new"
    _refused(_cli("train", phantoms, "--out", new, "--init-from", run, *TINY), run / "checkpoint_best.pt", REFUSED)
    assert not marker.exists()
    assert not new.exists() and not list(tmp_path.glob(".new*"))


@pytest.fixture
def truncated(trained, tmp_path):
    """A copy of the trained run with ``checkpoint_last.pt`` cut short and no best checkpoint (so that
    ``--init-from`` reads the last one)."""
    run = tmp_path / "cut"
    shutil.copytree(trained, run)
    (run / "checkpoint_best.pt").unlink()
    last = run / "checkpoint_last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    return run


def test_resume_says_a_truncated_checkpoint_in_one_line(truncated, phantoms):
    _refused(_cli("train", phantoms, "--out", truncated, "--resume"), truncated / "checkpoint_last.pt",
             "unreadable or truncated checkpoint")


def test_init_from_a_truncated_checkpoint_leaves_no_run_folder(truncated, phantoms, tmp_path):
    new = tmp_path / "new"
    _refused(_cli("train", phantoms, "--out", new, "--init-from", truncated, *TINY), truncated / "checkpoint_last.pt",
             "unreadable or truncated checkpoint")
    assert not new.exists() and not list(tmp_path.glob(".new*"))


def test_the_run_folders_own_checkpoints_read_with_weights_only(trained):
    for name in ("checkpoint_best.pt", "checkpoint_last.pt"):
        assert "model" in torch.load(trained / name, weights_only=True)
