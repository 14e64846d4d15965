"""What training feeds the network: prepared cases, the seeded stream of patch batches, and the loss targets.

Batch ``i`` of a run depends only on ``(seed, i)`` (:class:`voxseg.data.loader.PatchLoader`), so a resumed run
continues the stream where the checkpoint left it.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from voxseg.config import RunPlan
from voxseg.data.augment import build_augmentation
from voxseg.data.cache import PreparedCase
from voxseg.data.loader import PatchLoader

__all__ = ["PreparedCase", "patch_stream", "loss_targets"]


def patch_stream(plan: RunPlan, cases: list[PreparedCase], seed: int, start_batch: int) -> PatchLoader:
    """The batch stream of a run, positioned at batch ``start_batch``.

    Batches are ``(x, y)``: ``x`` ``(B, C, *patch)`` float32 and ``y`` ``(B, *patch)`` consecutive labels, with
    ``patch`` 3-D or 2-D by the plan's training mode (``"3d"``, ``"2d"``, ``"2.5d"``; a 2-D network never reads
    3-D patches). Close the stream (``.close()``) to stop its worker processes.

    Args:
        plan: the run plan (patch size, batch size, sampling, augmentation, channels).
        cases: training cases.
        seed: the stream's seed (the plan's seed, plus ``1000 * rank`` under DDP).
        start_batch: index of the first batch to deliver (iterations already trained).
    """
    cfg = plan.train
    mode = cfg.mode if plan.network.spatial_dims == 2 else "3d"
    if plan.network.spatial_dims == 2 and mode == "3d":
        mode = "2d"
    patch = cfg.patch_size[1:] if mode != "3d" else cfg.patch_size
    loader = PatchLoader([(c.image, c.label) for c in cases], patch, batch_size=cfg.batch_size,
                         foreground_fraction=cfg.foreground_fraction, augment=build_augmentation(plan.augment),
                         num_workers=cfg.loader_workers, seed=seed, mode=mode, slices=cfg.slices,
                         slice_selection=cfg.slice_selection, overhang=cfg.patch_overhang,
                         channels=plan.channel_indices if cfg.channels else None)
    loader.load_state_dict({"next_batch": start_batch})
    return loader


@functools.lru_cache(maxsize=8)
def _region_table(label_values: tuple[int, ...], regions: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """``(K, R)`` float32: 1 where consecutive class ``k``'s label value lies in region ``r``."""
    return np.array([[v in region for region in regions] for v in label_values], dtype=np.float32)


def loss_targets(labels: np.ndarray, plan: RunPlan) -> torch.Tensor:
    """Batch ``(B, *spatial)`` consecutive labels -> loss targets.

    Returns:
        ``(B, 1, *spatial)`` int64 class indices, or for region schemes ``(B, R, *spatial)`` float32 region
        masks (one table lookup per voxel; the labels were checked against the scheme when preprocessed).
    """
    scheme = plan.scheme
    if scheme.is_region_based:
        table = _region_table(tuple(plan.label_values), tuple(scheme.regions.values()))
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(table[labels], -1, 1)))
    return torch.from_numpy(labels.astype(np.int64))[:, None]
