"""Training memory: the counted estimate, the patch and batch that fit a budget, and the plan that uses them."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from voxseg.data.phantoms import make_phantom_dataset
from voxseg.errors import InputError
from voxseg.nets import build_network, estimate_saved_activation_bytes
from voxseg.config import NetworkConfig, RunPlan, TrainConfig, TrainOptions
from voxseg.runs import run_training
from voxseg.plan.memory import estimate_training_memory, fit_patch_to_memory

GIB = 2**30


def _real_saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """The oracle: the same count on a real forward pass with real tensors."""
    saved: dict[int, int] = {}

    def pack(t):
        saved[id(t)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    del out
    return sum(saved.values())


@pytest.mark.parametrize("dims, kwargs", [(3, {"base_width": 4, "depth": 3, "deep_supervision": True}),
                                          (2, {"base_width": 8, "depth": 4})])
def test_meta_count_equals_a_real_forward(dims, kwargs):
    torch.manual_seed(0)
    model = build_network("unet", dims, 2, 3, **kwargs).train()
    shape = (2, *([16] * dims))
    assert estimate_saved_activation_bytes(model, shape, batch_size=2) == _real_saved_bytes(model, torch.randn(2, *shape))
    assert model.training  # left as it was


def test_fit_shrinks_the_longest_axis_first_then_the_batch():
    model = build_network("unet", 3, 1, 2, base_width=8, depth=4)  # divisor 8
    at = lambda patch, batch: estimate_training_memory(model, (1, *patch), batch).total  # noqa: E731
    patch, batch, est = fit_patch_to_memory(model, 1, [64, 96, 64], 2, at([64, 96, 64], 2), model.size_divisor)
    assert (patch, batch, est.total) == ([64, 96, 64], 2, at([64, 96, 64], 2))  # fits: unchanged
    patch, batch, est = fit_patch_to_memory(model, 1, [64, 96, 64], 2, at([64, 88, 64], 2), model.size_divisor)
    assert (patch, batch) == ([64, 88, 64], 2) and est.total <= at([64, 88, 64], 2)
    patch, batch, _ = fit_patch_to_memory(model, 1, [64, 96, 64], 2, at([32, 32, 32], 1), model.size_divisor)
    assert (patch, batch) == ([32, 32, 32], 1)  # every axis at the 32-voxel floor, then batch 1
    with pytest.raises(ValueError, match=r"even at patch \[32, 32, 32\] and batch 1, more than the 0.1 GiB"):
        fit_patch_to_memory(model, 1, [64, 96, 64], 2, int(0.1 * GIB), model.size_divisor)


def test_fit_keeps_a_two_d_patch_two_d():
    model = build_network("unet", 2, 3, 2, base_width=16, depth=5)
    budget = estimate_training_memory(model, (3, 256, 256), 4).total
    patch, batch, _ = fit_patch_to_memory(model, 3, [1, 512, 512], 4, budget, model.size_divisor)
    assert patch[0] == 1 and math.prod(patch) <= 256 * 256 and batch == 4


# The measured peak of real steps against the estimate is a benchmark (benchmarks/memory_plan.py), not a test:
# one process's peak varied from 0.34 to 0.53 GiB for the same 48^3 step depending on what ran before it.


@pytest.fixture(scope="module")
def larger_phantoms(tmp_path_factory):
    return make_phantom_dataset(tmp_path_factory.mktemp("mem") / "ds", n_cases=3, shape=(48, 64, 64), seed=1)


def test_training_plans_a_patch_that_fits_the_memory_given(larger_phantoms, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    def options(memory_gib: float | None = None, patch_size: list[int] | None = None) -> TrainOptions:
        # no validation case: the test is about the plan, not the scores (and validating a full-size network is slow)
        return TrainOptions(memory_gib=memory_gib, train=TrainConfig(epochs=1, iterations_per_epoch=1, num_threads=1,
                                                                     val_fraction=0.0, patch_size=patch_size))

    said = []
    run_training(larger_phantoms, tmp_path / "free", options(), progress=False, log=said.append)
    free = RunPlan.load(tmp_path / "free" / "plan.json").train
    said.clear()
    run_training(larger_phantoms, tmp_path / "tight", options(memory_gib=0.8), progress=False,
                 log=said.append)
    tight = RunPlan.load(tmp_path / "tight" / "plan.json")
    assert math.prod(tight.train.patch_size) < math.prod(free.patch_size)
    model = build_network("unet", 3, 4, 4, **tight.network.kwargs)
    assert estimate_training_memory(model, (4, *tight.train.patch_size), tight.train.batch_size).total <= 0.8 * GIB
    assert any(line.startswith(f"memory: patch {free.patch_size} with batch 2 would need more than --memory 0.8 GiB")
               for line in said), said
    with pytest.raises(InputError, match="even at patch"):
        run_training(larger_phantoms, tmp_path / "none", options(memory_gib=0.2), progress=False)
    with pytest.raises(InputError, match=r"patch \[48, 64, 64\] with batch 2 needs about .* more than --memory 0.8"):
        run_training(larger_phantoms, tmp_path / "own", options(memory_gib=0.8, patch_size=[48, 64, 64]),
                     progress=False)
    assert not (tmp_path / "none").exists() and not (tmp_path / "own").exists()
    # No --memory: the budget is 80% of what the machine has free, plus the framework this process already holds.
    from voxseg.plan.memory import FRAMEWORK_BYTES

    monkeypatch.setattr("voxseg.plan.fit.available_memory", lambda device: (0.8 * GIB - FRAMEWORK_BYTES) / 0.8)
    run_training(larger_phantoms, tmp_path / "machine", options(), progress=False)
    assert RunPlan.load(tmp_path / "machine" / "plan.json").train.patch_size == tight.train.patch_size
    # A patch the user set: over 80% of the free memory is a warning, over all of it is refused at once.
    said.clear()
    run_training(larger_phantoms, tmp_path / "warned", options(patch_size=[32, 64, 64]),
                 progress=False, log=said.append)
    assert any(line.startswith("warning: patch [32, 64, 64] with batch 2 needs about") for line in said), said
    with pytest.raises(InputError, match=r"more than all 0.\d GiB free: give a smaller --patch"):
        run_training(larger_phantoms, tmp_path / "huge", options(patch_size=[64, 128, 128]),
                     progress=False)
    assert not (tmp_path / "huge").exists()


def test_an_edited_plan_that_needs_more_memory_than_free_is_refused_before_training(larger_phantoms, tmp_path,
                                                                                     monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = tmp_path / "planned"
    options = TrainOptions(network=NetworkConfig(kwargs={"base_width": 4, "depth": 3}),
                           train=TrainConfig(epochs=1, iterations_per_epoch=1, num_threads=2, val_fraction=0.0,
                                             patch_size=[16, 16, 16]))
    assert run_training(larger_phantoms, run, options, progress=False, plan_only=True) is None
    plan = RunPlan.load(run / "plan.json")
    plan.train.patch_size, plan.train.batch_size = [48, 64, 64], 3  # the user's edit (small batch: CPU steps are slow)
    plan.save(run / "plan.json")
    monkeypatch.setattr("voxseg.plan.fit.available_memory", lambda device: 0.1 * GIB)
    with pytest.raises(InputError, match=r"plan\.json: patch \[48, 64, 64\] with batch 3 needs about .* more than "
                                         r"all 0\.1 GiB free: give a smaller patch_size or batch_size in plan\.json$"):
        run_training(larger_phantoms, run, options, resume=True, progress=False)
    assert not (run / "checkpoint_last.pt").exists()
    # Over 80% of the memory free but under all of it: said, then trained.
    from voxseg.nets import build_model
    from voxseg.plan.memory import FRAMEWORK_BYTES

    need = estimate_training_memory(build_model(plan), (4, 48, 64, 64), 3, plan.train.optimizer, "cpu").total
    assert need > FRAMEWORK_BYTES
    # The budget is 80% of the memory free plus the framework already loaded; refused only above all of it.
    monkeypatch.setattr("voxseg.plan.fit.available_memory", lambda device: (need - FRAMEWORK_BYTES) / 0.9)
    said = []
    run_training(larger_phantoms, run, options, resume=True, progress=False, log=said.append)
    assert any(line.startswith("warning: patch [48, 64, 64] with batch 3 needs about") and "in plan.json fits" in line
               for line in said), said
    assert (run / "checkpoint_last.pt").exists()


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                                                "can't allocate memory: you tried to allocate 8589934592 bytes")])
def test_out_of_memory_during_training_is_one_line_with_what_to_do(larger_phantoms, tmp_path, monkeypatch, error):
    from click.testing import CliRunner

    from voxseg.cli import main

    def run_out_of_memory(*args, **kwargs):
        raise error

    monkeypatch.setattr("voxseg.runs.workflow.run_training", run_out_of_memory)
    result = CliRunner().invoke(main, ["train", str(larger_phantoms), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and result.exception is not None and isinstance(result.exception, SystemExit)
    (line,) = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert line.startswith("error: out of memory (") and "--memory GIB" in line


def test_preprocessed_cases_are_memory_mapped_from_the_cache_and_reused(larger_phantoms, tmp_path, monkeypatch):
    import numpy as np

    from voxseg.data import LabelMapping, PreprocessConfig
    from voxseg.io import load_dataset
    from voxseg.runs import prepare_cases

    cases = load_dataset(larger_phantoms).cases
    config, mapping = PreprocessConfig(), LabelMapping([0, 1, 2, 4])
    first = prepare_cases(cases, config, mapping, tmp_path / "cache", progress=False)
    for case in first:  # paged in from disk as patches are drawn, not held in RAM; never written into
        assert isinstance(case.image, np.memmap) and not case.image.flags.writeable
        assert case.image.dtype == np.float32 and case.label.dtype == np.uint8 and case.image.shape[1:] == case.label.shape

    def read_case_not_expected(*args, **kwargs):
        raise AssertionError("a cached case was read and preprocessed again")

    monkeypatch.setattr("voxseg.data.cache.read_case", read_case_not_expected)
    again = prepare_cases(cases, config, mapping, tmp_path / "cache", progress=False)
    assert all(np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label) for a, b in zip(first, again))
    # A case whose settings file is missing (a write cut short) is preprocessed again.
    (tmp_path / "cache" / f"{cases[0].case_id}.json").unlink()
    with pytest.raises(AssertionError, match="read and preprocessed again"):
        prepare_cases(cases, config, mapping, tmp_path / "cache", progress=False)


def test_a_cache_from_before_memory_mapping_is_converted_not_redone(larger_phantoms, tmp_path, monkeypatch):
    import json as _json

    import numpy as np

    from voxseg.data import LabelMapping, PreprocessConfig
    from voxseg.io import load_dataset
    from voxseg.runs import prepare_cases

    cases = load_dataset(larger_phantoms).cases[:1]
    config, mapping = PreprocessConfig(), LabelMapping([0, 1, 2, 4])
    (fresh,) = prepare_cases(cases, config, mapping, tmp_path / "new", progress=False)
    stamp = _json.loads((tmp_path / "new" / f"{fresh.case_id}.json").read_text())["stamp"]
    old = tmp_path / "old"
    old.mkdir()
    np.savez(old / f"{fresh.case_id}.npz", image=np.array(fresh.image), label=fresh.label, stamp=np.array(stamp),
             record=np.array(_json.dumps({"kept": "as it was"})))  # the format voxseg wrote before 2026-11-25
    monkeypatch.setattr("voxseg.data.cache.read_case", lambda *a, **k: pytest.fail("preprocessed again"))
    (converted,) = prepare_cases(cases, config, mapping, old, progress=False)
    assert np.array_equal(converted.image, fresh.image) and np.array_equal(converted.label, fresh.label)
    assert not (old / f"{fresh.case_id}.npz").exists() and isinstance(converted.image, np.memmap)


_FEW_FILES = r"""
import resource, sys, warnings
import numpy as np
from voxseg.data import LabelMapping, PreprocessConfig, prepare_cases
from voxseg.io import load_dataset
cases = load_dataset(sys.argv[1]).cases
config, mapping = PreprocessConfig(), LabelMapping([0, 1, 2, 4])
prepare_cases(cases, config, mapping, __import__("pathlib").Path(sys.argv[2]), progress=False)
import os
open_now = len(os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + 4, open_now + 4))  # the hard limit too: none to raise to
with warnings.catch_warnings(record=True) as said:
    warnings.simplefilter("always")
    out = prepare_cases(cases, config, mapping, __import__("pathlib").Path(sys.argv[2]), progress=False)
mapped = sum(isinstance(c.image, np.memmap) for c in out)
print(len(out), mapped, len(said), str(said[0].message) if said else "")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/self/fd")
def test_cases_beyond_the_open_file_limit_are_held_in_memory_with_a_warning(tmp_path):
    data = make_phantom_dataset(tmp_path / "ds", n_cases=10, shape=(12, 16, 12), seed=2)
    proc = subprocess.run([sys.executable, "-c", _FEW_FILES, str(data), str(tmp_path / "cache")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    n, mapped, warned, message = proc.stdout.strip().split(" ", 3)
    assert n == "10" and 0 < int(mapped) < 10 and warned == "1", proc.stdout
    assert "cannot map more cached cases" in message and "raise 'ulimit -n'" in message


_FEW_FILES_FIRST_RUN = r"""
import os, resource, sys, warnings
from pathlib import Path
import numpy as np
from voxseg.data import LabelMapping, PreparedCase, PreprocessConfig, cached_minicubes, prepare_cases
from voxseg.io import load_dataset
cases = load_dataset(sys.argv[1]).cases
open_now = len(os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + 4, open_now + 4))  # the hard limit too: none to raise to
with warnings.catch_warnings(record=True) as said:
    warnings.simplefilter("always")
    if sys.argv[3] == "cases":  # nothing cached yet: every case is written, then mapped
        out = prepare_cases(cases, PreprocessConfig(), LabelMapping([0, 1, 2, 4]), Path(sys.argv[2]), progress=False)
    else:  # one case in memory cut into 24 minicubes, none cached yet
        case = PreparedCase("c", np.zeros((1, 16, 12, 12), np.float32), np.zeros((16, 12, 12), np.uint8))
        out = cached_minicubes([case], [4, 4, 6], 0, Path(sys.argv[2]), "x")
mapped = sum(isinstance(c.image, np.memmap) for c in out)
print(len(out), mapped, len(said), str(said[0].message) if said else "")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/self/fd")
@pytest.mark.parametrize("what,n", [("cases", 10), ("minicubes", 24)])
def test_a_first_run_beyond_the_open_file_limit_holds_the_rest_in_memory(tmp_path, what, n):
    data = make_phantom_dataset(tmp_path / "ds", n_cases=10, shape=(12, 16, 12), seed=2)
    proc = subprocess.run([sys.executable, "-c", _FEW_FILES_FIRST_RUN, str(data), str(tmp_path / "cache"), what],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    count, mapped, warned, message = proc.stdout.strip().split(" ", 3)
    assert count == str(n) and 0 < int(mapped) < n and warned == "1", proc.stdout
    assert f"cannot map more cached {what}" in message and "raise 'ulimit -n'" in message
