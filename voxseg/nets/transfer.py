"""Transfer-learning helpers: freeze the first encoder stages, unfreeze, and replace the output head.

Wang & Tang (2020) fine-tune a network pre-trained on another data set with its first layers fixed; these
helpers do that on any voxseg network (`UNet`, `VNet`). Like segmentation_models.pytorch's
`freeze_encoder`, frozen normalisation layers stay in eval mode (their running statistics are not
updated) even after `model.train()`.
"""
from __future__ import annotations

from torch import nn

from voxseg.nets._base import _FreezableMixin
from voxseg.nets.blocks import _conv_cls

__all__ = ["freeze_encoder", "unfreeze", "replace_head"]


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, _FreezableMixin):
        raise TypeError(f"expected a voxseg network (UNet, VNet), got {type(model).__name__}")


def freeze_encoder(model: nn.Module, n_stages: int | None = None) -> nn.Module:
    """Stop training the first `n_stages` encoder stages (all of them if None).

    Parameters of those stages get `requires_grad=False`; their norm layers are put (and kept, across
    `model.train()`) in eval mode. Build the optimiser after freezing, or it still holds the frozen tensors
    (harmless: they get no gradient).

    Args:
        model: a voxseg network.
        n_stages: number of encoder stages to freeze, counted from the input (0 .. len(model.encoder_stages)).

    Returns:
        The same model, for chaining.
    """
    _check_model(model)
    total = len(model.encoder_stages)
    n = total if n_stages is None else n_stages
    if not 0 <= n <= total:
        raise ValueError(f"n_stages must be between 0 and {total} (the encoder stages of this network), got {n}")
    unfreeze(model)
    for stage in list(model.encoder_stages)[:n]:
        for p in stage.parameters():
            p.requires_grad_(False)
    model.frozen_stages = n
    model.train(model.training)
    return model


def unfreeze(model: nn.Module) -> nn.Module:
    """Make every parameter trainable again and let all norm layers follow `model.train()`/`eval()`."""
    _check_model(model)
    for p in model.parameters():
        p.requires_grad_(True)
    model.frozen_stages = 0
    model.train(model.training)
    return model


def replace_head(model: nn.Module, out_channels: int) -> nn.Module:
    """Replace the 1x1 output head(s) (main and deep-supervision) by new ones with `out_channels` outputs.

    The new heads are freshly initialised (PyTorch default), on the device and dtype of the old ones, and
    trainable. `model.out_channels` is updated.

    Args:
        model: a voxseg network (attribute `heads`, an `nn.ModuleList` of 1x1 convs).
        out_channels: new number of output channels.

    Returns:
        The same model, for chaining.
    """
    _check_model(model)
    if out_channels < 1:
        raise ValueError(f"out_channels must be positive, got {out_channels}")
    conv = _conv_cls(model.spatial_dims)
    for i, old in enumerate(model.heads):
        new = conv(old.in_channels, out_channels, 1, bias=old.bias is not None)
        model.heads[i] = new.to(device=old.weight.device, dtype=old.weight.dtype)
    model.out_channels = out_channels
    return model
