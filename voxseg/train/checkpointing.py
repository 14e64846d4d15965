"""Gradient (activation) checkpointing: recompute activations in the backward pass to save memory.

A checkpointed module keeps only its inputs during the forward pass; its intermediate activations
are recomputed when the backward pass reaches it (Chen et al., "Training Deep Nets with Sublinear
Memory Cost", arXiv:1604.06174, 2016). Cost: one extra forward of the module per training step;
gain: the activations inside the module, the bulk of a 3-D U-Net's training memory.

``voxseg.nets.UNet(gradient_checkpointing=True)`` (and every UNet-based preset, via
``NetworkConfig.kwargs``) checkpoints each encoder stage and decoder block; :func:`checkpointed` is the
same helper for other modules. Batch-norm running statistics are protected (the recomputation would
update them a second time) and dropout masks are reproduced (torch restores the RNG state).
"""
from __future__ import annotations

import torch
from torch import nn

from voxseg.nets.unet import _checkpointed

__all__ = ["checkpointed", "set_gradient_checkpointing"]


def checkpointed(module: nn.Module, *inputs: torch.Tensor, enabled: bool = True) -> torch.Tensor:
    """Run ``module(*inputs)``, checkpointed when that saves memory.

    Checkpointing is used only when ``enabled``, the module is in training mode and autograd is
    recording; in eval mode or under ``torch.no_grad()`` the module runs plainly (nothing to save).
    Non-reentrant checkpointing (``use_reentrant=False``): inputs need not require gradients, and
    outputs and gradients equal the plain ones.

    Args:
        module: the module to run (e.g. one encoder stage).
        *inputs: its inputs.
        enabled: False runs the module plainly.

    Returns:
        The module's output.
    """
    return _checkpointed(module, *inputs, enabled=enabled)


def set_gradient_checkpointing(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch gradient checkpointing of a network that supports it (``voxseg.nets.UNet`` and its presets).

    Args:
        model: a network with a ``gradient_checkpointing`` attribute.
        enabled: on or off.

    Returns:
        The model (same object).

    Raises:
        ValueError: the network has no gradient checkpointing option.
    """
    if not hasattr(model, "gradient_checkpointing"):
        raise ValueError(f"{type(model).__name__} has no gradient checkpointing option (UNet-based networks have)")
    model.gradient_checkpointing = bool(enabled)
    return model
