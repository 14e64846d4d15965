"""Private pieces shared by the voxseg networks: input checks and frozen-stage bookkeeping."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _allowed_sizes(divisor: int, count: int = 4) -> str:
    return ", ".join(str(divisor * k) for k in range(1, count + 1)) + " ..."


def _check_input(x: torch.Tensor, spatial_dims: int, in_channels: int, size_divisor: Sequence[int]) -> None:
    """Raise ValueError unless x is `(N, in_channels, *spatial)` with every size a multiple of the divisor."""
    if x.ndim != spatial_dims + 2:
        raise ValueError(
            f"expected a {spatial_dims + 2}-D input (N, C, {'Z, Y, X' if spatial_dims == 3 else 'Y, X'}), "
            f"got shape {tuple(x.shape)}"
        )
    if x.shape[1] != in_channels:
        raise ValueError(f"expected {in_channels} input channels, got {x.shape[1]} (input shape {tuple(x.shape)})")
    check_spatial_size(tuple(x.shape[2:]), size_divisor)


def check_spatial_size(spatial: Sequence[int], size_divisor: Sequence[int]) -> None:
    """Raise ValueError unless every size of ``spatial`` (voxels) is a positive multiple of the network's
    ``size_divisor`` on that axis (what a forward pass needs; also checked when a patch is planned)."""
    for axis, (size, div) in enumerate(zip(spatial, size_divisor)):
        if size < 1 or size % div:
            lower, upper = (size // div) * div, (size // div + 1) * div
            nearest = f"{lower} or {upper}" if lower > 0 else f"{max(upper, div)}"
            raise ValueError(
                f"spatial size {size} (axis {axis} of spatial shape {tuple(spatial)}) is not a multiple of "
                f"{div}; allowed: {_allowed_sizes(div)} (nearest: {nearest})"
            )


class _FreezableMixin:
    """Keeps normalisation layers of frozen encoder stages in eval mode across `.train()` calls.

    The network sets `self.encoder_stages` (an `nn.ModuleList`, shallowest first) and
    `self.frozen_stages = 0`; `voxseg.nets.freeze_encoder` changes `frozen_stages`.
    """

    encoder_stages: nn.ModuleList
    frozen_stages: int

    def train(self, mode: bool = True):  # noqa: D401 - torch signature
        super().train(mode)  # type: ignore[misc]
        for stage in list(self.encoder_stages)[: self.frozen_stages]:
            for module in stage.modules():
                if isinstance(module, _NORM_TYPES):
                    module.eval()
        return self


def shrink_longest_axis(spatial: list[int], divisor: Sequence[int], floor: Sequence[int]) -> bool:
    """Shrink, in place, the longest axis of ``spatial`` (voxels) that can lose one ``divisor`` step and stay at or
    above its ``floor``; False when none can."""
    shrinkable = [i for i, (s, f) in enumerate(zip(spatial, floor)) if s - divisor[i] >= f]
    if not shrinkable:
        return False
    axis = max(shrinkable, key=lambda i: spatial[i])
    spatial[axis] -= divisor[axis]
    return True


def smallest_patch_sides(divisor: Sequence[int], min_side: int = 32) -> list[int]:
    """The smallest side (voxels) a patch shrunk for time may reach per axis: ``min_side`` rounded down to the
    network's ``divisor``, never below two divisors (the deepest stage keeps two voxels along every axis)."""
    return [max(2 * d, (min_side // d) * d) for d in divisor]
