"""The options of ``voxseg train`` are generated from the typed configuration: one definition per knob, choices
read from the registries, help grouped by purpose, and a reference (docs/options.md) that matches the code."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from voxseg.cli import main
from voxseg.cli_options import REGENERATE, options_markdown
from voxseg.config import (GROUPS, NetworkConfig, RunPlan, TrainConfig, TrainOptions, knob_fields, train_knobs,
                           with_values)
from voxseg.data.phantoms import make_phantom_dataset

DOC = Path(__file__).resolve().parents[1] / "docs" / "options.md"
TRAIN = main.commands["train"]  # the click command of `voxseg train`


def _option(flag: str) -> click.Option:
    params = TRAIN.get_params(click.Context(TRAIN))
    return next(p for p in params if flag in p.opts)


def test_docs_options_md_is_the_reference_the_code_generates():
    assert DOC.read_text() == options_markdown(TRAIN), f"docs/options.md is out of date: run '{REGENERATE}'"


def test_every_knob_has_one_flag_a_group_and_help_citing_no_seed_reports():
    flags = [k.flag or f"--{f.name.replace('_', '-')}" for _, f, k in train_knobs()]
    assert len(flags) == len(set(flags))
    assert {k.group for _, _, k in train_knobs()} <= set(GROUPS)
    assert not [k.help for _, _, k in train_knobs() if re.search(r"seed (report )?0\d\d", k.help)]
    # A training setting is a field of TrainConfig only, not repeated on TrainOptions.
    own = {f.name for f in dataclasses.fields(TrainOptions)}
    assert not own & {f.name for f in dataclasses.fields(TrainConfig)}
    assert "flips" not in {f.name for f in dataclasses.fields(TrainConfig)}
    assert [f.name for f, _ in knob_fields(NetworkConfig)] == ["name", "spatial_dims", "kwargs"]


def test_help_has_one_section_per_purpose_in_order():
    result = CliRunner().invoke(main, ["train", "--help"])
    assert result.exit_code == 0
    titles = [line.rstrip(":") for line in result.output.splitlines() if line.endswith("options:")]
    assert titles == [f"{g[:1].upper()}{g[1:]} options" for g in GROUPS]
    assert "--optimizer-args" in result.output and "--device [auto|cpu|cuda]" in result.output


def test_a_registered_optimizer_is_a_choice_without_editing_the_cli(monkeypatch, tmp_path):
    from voxseg.train.optim import OPTIMIZERS

    assert "dummy" not in _option("--optimizer").type.choices
    monkeypatch.setitem(OPTIMIZERS, "dummy", dataclasses.replace(OPTIMIZERS["sgd"], name="dummy"))
    assert "dummy" in _option("--optimizer").type.choices
    data = make_phantom_dataset(tmp_path / "ds", n_cases=3, shape=(16, 20, 16), seed=1)
    result = CliRunner().invoke(main, ["train", str(data), "--out", str(tmp_path / "run"), "--optimizer", "dummy",
                                       "--plan-only", "--net-args", "base_width=4,depth=3", "--patch", "16x16x16",
                                       "--threads", "1"])
    assert result.exit_code == 0, result.output
    plan = RunPlan.load(tmp_path / "run" / "plan.json")
    assert plan.train.optimizer == "dummy" and plan.train.lr == 1e-3  # planned for an optimiser other than sgd
    monkeypatch.undo()
    refused = CliRunner().invoke(main, ["train", str(data), "--out", str(tmp_path / "new"), "--optimizer", "dummy"])
    assert refused.exit_code == 2 and "Invalid value for '--optimizer'" in refused.output


@pytest.mark.parametrize("loss, ok", [("dice+ce", True), ("0.5*dice+1*focal", True), ("dice+bogus", False)])
def test_a_loss_spec_is_checked_by_the_loss_registrys_parser(loss, ok):
    option = _option("--loss")
    if ok:
        assert option.type.convert(loss, option, None) == loss
    else:
        with pytest.raises(click.BadParameter, match="unknown loss 'bogus'"):
            option.type.convert(loss, option, None)


def test_with_values_sets_nested_knobs_and_leaves_the_rest():
    options = with_values(TrainOptions(), {"train.lr": 0.1, "network.kwargs": {"depth": 3}, "folds": 3})
    assert options.train.lr == 0.1 and options.network.kwargs == {"depth": 3} and options.folds == 3
    assert options.train.epochs == TrainConfig().epochs and TrainOptions().train.lr is None


def test_an_old_plan_with_the_retired_flips_field_still_loads(tmp_path):
    plan = RunPlan(channel_names=["t1"], label_values=[0, 1], train=TrainConfig(lr=0.01, patch_size=[8, 8, 8]))
    saved = plan.to_dict()
    assert RunPlan.from_dict(json.loads(json.dumps(saved))) == plan  # round trip through JSON
    saved["train"]["flips"] = True  # written by older versions
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(saved))
    assert RunPlan.load(path) == plan


def test_train_on_cuda_without_a_gpu_is_one_line_before_any_case_is_read(monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = make_phantom_dataset(tmp_path / "ds", n_cases=3, shape=(16, 20, 16), seed=1)
    result = CliRunner().invoke(main, ["train", str(data), "--out", str(tmp_path / "run"), "--device", "cuda",
                                       "--plan-only"])
    assert result.exit_code == 2
    assert "--device: cuda was asked for, but torch sees no CUDA GPU" in result.output
    assert "preprocess" not in result.output and not (tmp_path / "run").exists()
