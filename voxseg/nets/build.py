"""The network a run plan describes."""
from __future__ import annotations

import torch

from voxseg.config import RunPlan
from voxseg.nets.registry import build_network

__all__ = ["build_model"]


def build_model(plan: RunPlan) -> torch.nn.Module:
    """The network the plan describes, randomly initialised (on the CPU, in training mode)."""
    return build_network(plan.network.name, plan.network.spatial_dims, plan.input_channels,
                         plan.num_outputs, **plan.network.kwargs)
