"""Flag training cases whose loss stays high at the end of training (Henry et al.'s (2021) dataset filtering:
"cases with high training loss at the end of the training procedure were flagged as potentially
wrong and removed"), so a user can look at them and retrain without them (``--exclude-cases``)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from voxseg.data.sampling import PatchSampler

__all__ = ["training_case_losses", "flag_high_loss_cases"]


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
