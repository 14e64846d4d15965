"""Flag training cases whose loss stays high at the end of training (Henry et al.'s (2021) dataset filtering:
"cases with high training loss at the end of the training procedure were flagged as potentially
wrong and removed"), so a user can look at them and retrain without them (``--exclude-cases``)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from voxseg.config import RunPlan
from voxseg.data.sampling import PatchSampler
from voxseg.io.files import save_json_atomic
from voxseg.train.batches import loss_targets

__all__ = ["training_case_losses", "flag_high_loss_cases", "write_case_flags"]


def training_case_losses(model: torch.nn.Module, cases, loss_of: Callable[[torch.Tensor, np.ndarray], float],
                         patch_size: tuple[int, ...], patches_per_case: int = 4, seed: int = 0,
                         prepare: Callable[[np.ndarray], torch.Tensor] | None = None) -> dict[str, float]:
    """Mean loss of the final model on a few seeded patches of every training case (eval mode, no grad).

    Args:
        model: the trained network.
        cases: objects with ``case_id``, ``image (C, Z, Y, X)``, ``label (Z, Y, X)``.
        loss_of: ``(logits (1, K, ...), label patch (1, ...)) -> float``.
        patch_size: ``(pz, py, px)`` voxels.
        patches_per_case: patches per case; half are centred on foreground.
        prepare: maps an image patch ``(1, C, *patch)`` to the network input (2-D squeeze, channel subset).

    Returns:
        ``{case_id: mean loss}``.
    """
    was_training = model.training
    model.eval()
    out: dict[str, float] = {}
    with torch.no_grad():
        for index, case in enumerate(cases):
            rng = np.random.default_rng([seed, index])
            sampler = PatchSampler(case.image, case.label, patch_size, rng=rng)
            values = []
            for k in range(patches_per_case):
                img, lbl = sampler.sample(force_foreground=k % 2 == 0, rng=rng)
                x = torch.from_numpy(img[None])
                x = prepare(x) if prepare is not None else x
                values.append(loss_of(model(x), lbl[None]))
            out[case.case_id] = float(np.mean(values))
    model.train(was_training)
    return out


def flag_high_loss_cases(losses: dict[str, float], threshold_mads: float = 3.0) -> list[str]:
    """Cases whose loss is above ``median + threshold_mads * MAD`` (a robust outlier rule), worst first.

    The MAD is scaled by 1.4826 so it estimates the standard deviation for normally distributed losses.
    """
    if len(losses) < 3:
        return []
    values = np.array(list(losses.values()))
    median = float(np.median(values))
    mad = 1.4826 * float(np.median(np.abs(values - median)))
    limit = median + threshold_mads * max(mad, 1e-12)
    return sorted((c for c, v in losses.items() if v > limit), key=lambda c: -losses[c])


def write_case_flags(model: torch.nn.Module, plan: RunPlan, cases, loss_fn: Callable, device: torch.device,
                     run_dir: Path, log: Callable[[str], None]) -> None:
    """Score the final model on every training case and write ``case_losses.csv`` (worst first) and
    ``flagged_cases.json`` (the cases :func:`flag_high_loss_cases` flags) into ``run_dir``; say so with ``log``.

    Args:
        cases: the training cases (``voxseg.train.batches.PreparedCase``).
        loss_fn: the training loss, ``(logits, targets) -> scalar``.
    """
    two_d = plan.network.spatial_dims == 2

    def prepare(x: torch.Tensor) -> torch.Tensor:
        x = x[:, plan.channel_indices] if plan.train.channels else x
        return (x[:, :, 0] if two_d else x).to(device)

    def loss_of(logits, label) -> float:
        target = loss_targets(label[:, 0] if two_d else label, plan).to(device)
        out = logits[0] if isinstance(logits, (list, tuple)) else logits
        return float(loss_fn(out.float(), target))

    if plan.train.mode == "2.5d":
        log("case flagging is not available for 2.5-D training; skipped")
        return
    losses = training_case_losses(model, cases, loss_of, tuple(plan.train.patch_size), seed=plan.train.seed,
                                  prepare=prepare)
    flagged = flag_high_loss_cases(losses)
    lines = ["case_id,loss,flagged"] + [f"{c},{v:.6f},{int(c in flagged)}"
                                        for c, v in sorted(losses.items(), key=lambda kv: -kv[1])]
    (run_dir / "case_losses.csv").write_text("\n".join(lines) + "\n")
    save_json_atomic({"flagged": flagged, "rule": "loss > median + 3 * 1.4826 * MAD",
                      "losses": {c: losses[c] for c in flagged}}, run_dir / "flagged_cases.json")
    log(f"flagged {len(flagged)} case(s) with high final training loss (flagged_cases.json): "
        f"{', '.join(flagged) or 'none'}; retrain without them with --exclude-cases {run_dir / 'flagged_cases.json'}")
