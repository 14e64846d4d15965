"""Shared by the benchmarks that train as ``voxseg train`` would: the user's default options (a time budget, the
threads, the seed and the label settings only), and the planner's choices as a benchmark prints and saves them."""
from __future__ import annotations

import dataclasses

from voxseg.config import RunPlan, TrainConfig, TrainOptions


def default_options(minutes: float, threads: int, seed: int, **top) -> TrainOptions:
    """``voxseg train DATA --time-budget MINUTES --threads THREADS --seed SEED`` (and ``top``, e.g. label_scheme):
    everything else is left for the planner."""
    return TrainOptions(train=TrainConfig(time_budget_minutes=minutes, num_threads=threads, seed=seed),
                        epochs_from_budget=minutes is not None, **top)


def quick_options(options: TrainOptions) -> TrainOptions:
    """``options`` for a benchmark's ``--quick`` smoke test (under 2 minutes on 2 cores): no timing of training
    steps to fit the patch to the budget (``min_iterations`` 0) and no N4 (its minutes of preprocessing)."""
    return dataclasses.replace(options, min_iterations=0,
                               preprocess=dataclasses.replace(options.preprocess, n4=False))


def chosen_plan(plan: RunPlan) -> dict:
    """What the planner chose, for a benchmark's last JSON line."""
    t = plan.train
    return {"spacing_mm": plan.preprocess.target_spacing, "n4": plan.preprocess.n4, "optimizer": t.optimizer,
            "lr": t.lr, "augment": [k for k, v in plan.augment.to_dict().items() if isinstance(v, dict) and v.get("p")],
            "net_kwargs": plan.network.kwargs, "patch": t.patch_size, "batch_size": t.batch_size,
            "val_fraction": t.val_fraction, "notes": plan.planner_notes}


def print_plan(plan: RunPlan) -> None:
    """The planner's choices, one line each."""
    for note in plan.planner_notes:
        print(f"planner: {note}")
