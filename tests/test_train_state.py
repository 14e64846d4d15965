"""Training state <-> checkpoint (voxseg.train.state): the training checkpoint round-trips every field, keeps its
keys (old run folders resume and predict), and an older checkpoint without the newer keys still reads. What is
written is tensors and plain values only (read back with torch's weights-only unpickler); numpy numbers of older
checkpoints still read, and a checkpoint that would run code is refused before it runs."""
import pathlib

import numpy as np
import pytest
import torch
from torch import nn

from voxseg.errors import InputError
from voxseg.train.optim import OPTIMIZERS, build_optimizer
from voxseg.train.early_stopping import EarlyStopping
from voxseg.train.schedules import PlateauScheduler
from voxseg.train.state import TrainState, read_checkpoint, read_weights, write_checkpoint, write_weights
from voxseg.train.swa import SWACollector

# The keys of checkpoint_last.pt, in order, as every voxseg version since resume wrote them (parts last).
KEYS = ["model", "optimizer", "epoch", "elapsed_seconds", "best_metric", "best_epoch", "iterations", "rng",
        "history", "stopped_main", "swa_done", "plateau", "early_stopping", "swa", "scaler"]


def _net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(1, 3, 3), nn.BatchNorm3d(3), nn.Conv3d(3, 2, 1))


def _trained(seed=0):
    """A model and Adam optimiser one step into training (the optimiser has state), and parts with state."""
    net = _net(seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(2, 1, 5, 5, 5)).sum().backward()
    opt.step()
    plateau, early, swa = PlateauScheduler(1e-3, patience=1), EarlyStopping(patience=3), SWACollector(net, 1)
    for value in (0.5, 0.4, 0.3):
        plateau.step(value)
        early.update(value)
    swa.collect()
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    return net, opt, {"plateau": plateau, "early_stopping": early, "swa": swa, "scaler": scaler}


def _fresh():
    net = _net(1)
    return net, torch.optim.Adam(net.parameters(), lr=1e-3), {
        "plateau": PlateauScheduler(1e-3, patience=1), "early_stopping": EarlyStopping(patience=3),
        "swa": SWACollector(net, 1), "scaler": torch.amp.GradScaler("cuda", enabled=False)}


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_training_checkpoint_round_trips_every_field(tmp_path):
    net, opt, parts = _trained()
    state = TrainState(epoch=7, elapsed_seconds=123.5, best_metric=0.61, best_epoch=5, iterations=333,
                       history=[{"epoch": 1, "lr": 0.01}], stopped_main=True, swa_done=2)
    path = tmp_path / "checkpoint_last.pt"
    write_checkpoint(path, net, opt, state, parts)
    after_write = torch.rand(4)  # what the RNG gives next must come again after a resume
    saved = torch.load(path, weights_only=True)
    assert list(saved) == KEYS

    net2, opt2, parts2 = _fresh()
    assert not _same(net2.state_dict(), net.state_dict())
    read = read_checkpoint(path, net2, opt2, parts2, iterations_per_epoch=50)
    assert read == state
    assert torch.equal(torch.rand(4), after_write)
    assert _same(net2.state_dict(), net.state_dict())
    assert _same(opt2.state_dict(), opt.state_dict())
    for name, part in parts.items():
        assert _same(parts2[name].state_dict(), part.state_dict()), name


def test_parts_not_in_use_are_left_out_and_keep_their_own_state_on_resume(tmp_path):
    net, opt, parts = _trained()
    path = tmp_path / "checkpoint_last.pt"
    write_checkpoint(path, net, opt, TrainState(epoch=1), {**parts, "plateau": None, "swa": None})
    assert list(torch.load(path, weights_only=True)) == [k for k in KEYS if k not in ("plateau", "swa")]
    net2, opt2, parts2 = _fresh()
    own = parts2["plateau"].state_dict()
    read_checkpoint(path, net2, opt2, parts2, iterations_per_epoch=50)
    assert parts2["plateau"].state_dict() == own


def test_an_older_checkpoint_without_the_newer_keys_still_reads(tmp_path):
    net, opt, _ = _trained()
    old = {"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 4, "elapsed_seconds": 60.0,
           "best_metric": 0.7, "best_epoch": 3, "rng": {"torch": torch.get_rng_state()}}
    torch.save(old, tmp_path / "old.pt")
    net2, opt2, parts2 = _fresh()
    own_early = parts2["early_stopping"].state_dict()
    state = read_checkpoint(tmp_path / "old.pt", net2, opt2, parts2, iterations_per_epoch=25)
    assert state == TrainState(epoch=4, elapsed_seconds=60.0, best_metric=0.7, best_epoch=3, iterations=100,
                               history=[], stopped_main=False, swa_done=0)
    assert _same(net2.state_dict(), net.state_dict()) and parts2["early_stopping"].state_dict() == own_early


def test_weights_checkpoints_keep_their_keys_and_read_back(tmp_path):
    net, opt, parts = _trained()
    write_weights(tmp_path / "best.pt", net, 5, val_dice={"tumour": 0.8})
    saved = torch.load(tmp_path / "best.pt", weights_only=True)
    assert list(saved) == ["model", "epoch", "val_dice"] and saved["epoch"] == 5
    assert _same(read_weights(tmp_path / "best.pt"), net.state_dict())
    write_checkpoint(tmp_path / "last.pt", net, opt, TrainState(), parts)  # weights read from either format
    assert _same(read_weights(tmp_path / "last.pt"), net.state_dict())


def test_an_unreadable_checkpoint_is_said_with_its_path(tmp_path):
    write_weights(tmp_path / "best.pt", _net(0), 1)
    cut = tmp_path / "cut.pt"
    cut.write_bytes((tmp_path / "best.pt").read_bytes()[:100])
    with pytest.raises(InputError, match="unreadable or truncated checkpoint") as err:
        read_weights(cut)
    assert str(cut) in str(err.value)
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="unreadable or truncated checkpoint"):
        read_weights(tmp_path / "other.pt")


def test_numpy_numbers_are_written_as_python_ones(tmp_path):
    net, opt, parts = _trained()
    parts["early_stopping"].best = np.float64(0.25)
    state = TrainState(epoch=1, history=[{"epoch": np.int64(1), "lr": np.float32(0.5), "val": np.float64(0.1),
                                          "flag": np.bool_(True), "dice": np.array([0.5, 0.25])}])
    write_checkpoint(tmp_path / "last.pt", net, opt, state, parts)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)  # no numpy global allowed here
    assert saved["history"] == [{"epoch": 1, "lr": 0.5, "val": 0.1, "flag": True, "dice": [0.5, 0.25]}]
    assert type(saved["history"][0]["lr"]) is float and type(saved["early_stopping"]["best"]) is float
    write_weights(tmp_path / "best.pt", net, 1, val_dice={"tumour": np.float64(0.8)})
    assert type(torch.load(tmp_path / "best.pt", weights_only=True)["val_dice"]["tumour"]) is float


def test_an_old_checkpoint_with_numpy_numbers_still_resumes(tmp_path):
    net, opt, parts = _trained()
    history = [{"epoch": 1, "lr": np.float64(0.01), "train_loss": np.float32(0.5), "val_dice_mean": np.float64(0.3)}]
    old = {"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": np.int64(1),
           "elapsed_seconds": np.float64(60.0), "best_metric": np.float64(0.3), "best_epoch": 1,
           "rng": {"torch": torch.get_rng_state()}, "history": history,
           "early_stopping": {**parts["early_stopping"].state_dict(), "best": np.float64(0.3)}}
    torch.save(old, tmp_path / "old.pt")  # as a version that kept numpy numbers wrote it
    net2, opt2, parts2 = _fresh()
    state = read_checkpoint(tmp_path / "old.pt", net2, opt2, parts2, iterations_per_epoch=25)
    assert state.epoch == 1 and state.iterations == 25 and state.best_metric == pytest.approx(0.3)
    assert state.history == [{"epoch": 1, "lr": 0.01, "train_loss": 0.5, "val_dice_mean": 0.3}]
    assert type(state.history[0]["lr"]) is float
    assert _same(net2.state_dict(), net.state_dict()) and parts2["early_stopping"].best == pytest.approx(0.3)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizers_state_reads_with_weights_only(name, tmp_path):
    net = _net(0)
    opt = build_optimizer(name, net, lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        net(torch.randn(2, 1, 5, 5, 5)).sum().backward()
        opt.step()
    write_checkpoint(tmp_path / "last.pt", net, opt, TrainState(epoch=1), {})
    net2 = _net(1)
    opt2 = build_optimizer(name, net2, lr=1e-3)
    read_checkpoint(tmp_path / "last.pt", net2, opt2, {}, iterations_per_epoch=2)
    assert _same(opt2.state_dict(), opt.state_dict())


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_a_checkpoint_that_would_run_code_is_refused_before_it_runs(tmp_path):
    net, opt, parts = _trained()
    write_checkpoint(tmp_path / "last.pt", net, opt, TrainState(epoch=1), parts)
    marker = tmp_path / "MARKER"
    hostile = tmp_path / "hostile.pt"
    torch.save({**torch.load(tmp_path / "last.pt", weights_only=True), "x": _RunsCode(marker)}, hostile)
    for read in (read_weights, lambda p: read_checkpoint(p, *_fresh(), iterations_per_epoch=5)):
        with pytest.raises(InputError, match="holds objects other than tensors and plain values") as err:
            read(hostile)
        assert str(hostile) in str(err.value)
    assert not marker.exists()


def test_a_truncated_or_foreign_training_checkpoint_is_said_in_one_line(tmp_path):
    net, opt, parts = _trained()
    write_checkpoint(tmp_path / "last.pt", net, opt, TrainState(epoch=1), parts)
    cut = tmp_path / "cut.pt"
    cut.write_bytes((tmp_path / "last.pt").read_bytes()[:500])
    with pytest.raises(InputError, match="unreadable or truncated checkpoint"):
        read_checkpoint(cut, *_fresh(), iterations_per_epoch=5)
    write_weights(tmp_path / "best.pt", net, 1)
    with pytest.raises(InputError, match="not a voxseg training checkpoint"):
        read_checkpoint(tmp_path / "best.pt", *_fresh(), iterations_per_epoch=5)
    other = nn.Sequential(nn.Conv3d(1, 4, 3))
    with pytest.raises(InputError, match="does not fit the network"):
        read_checkpoint(tmp_path / "last.pt", other, torch.optim.Adam(other.parameters()), {}, iterations_per_epoch=5)
