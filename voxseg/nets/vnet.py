"""V-Net: residual stages of 5x5x5 convs, strided-conv down-sampling, PReLU."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from voxseg.nets._base import _check_input, _FreezableMixin
from voxseg.nets.blocks import ConvNormAct, _act, _conv_cls, _conv_transpose_cls, _norm
from voxseg.nets.unet import _init_weights

__all__ = ["VNet"]


class _ResidualStage(nn.Module):
    """act(convs(x) + x): `n_convs` (conv_k - norm - act), the last activation after the sum."""

    def __init__(self, spatial_dims, channels, n_convs, kernel_size, norm, activation, dropout):
        super().__init__()
        layers = [
            ConvNormAct(spatial_dims, channels, channels, kernel_size, 1, 1, norm, activation, dropout)
            for _ in range(n_convs - 1)
        ]
        layers.append(ConvNormAct(spatial_dims, channels, channels, kernel_size, 1, 1, norm, None))
        self.convs = nn.Sequential(*layers)
        self.act = _act(activation, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.convs(x) + x)


class _Down(nn.Module):
    """Strided 2x2x2 conv doubling the channels (+ norm, act), then a residual stage."""

    def __init__(self, spatial_dims, c_in, c_out, n_convs, kernel_size, norm, activation, dropout):
        super().__init__()
        self.down = ConvNormAct(spatial_dims, c_in, c_out, 2, 2, 1, norm, activation)
        self.stage = _ResidualStage(spatial_dims, c_out, n_convs, kernel_size, norm, activation, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage(self.down(x))


class _Input(nn.Module):
    """First stage: act(convs(x) + x broadcast to C channels) (the paper replicates the 1-channel input)."""

    def __init__(self, spatial_dims, c_in, c_out, n_convs, kernel_size, norm, activation, dropout):
        super().__init__()
        layers = [ConvNormAct(spatial_dims, c_in, c_out, kernel_size, 1, 1, norm, activation if n_convs > 1 else None)]
        layers += [
            ConvNormAct(spatial_dims, c_out, c_out, kernel_size, 1, 1, norm, activation if i < n_convs - 2 else None, dropout)
            for i in range(n_convs - 1)
        ]
        self.convs = nn.Sequential(*layers)
        self.repeat = c_out // c_in if c_out % c_in == 0 else 0
        self.project = None if self.repeat else _conv_cls(spatial_dims)(c_in, c_out, 1, bias=False)
        self.act = _act(activation, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.project is None:
            shortcut = x.repeat_interleave(self.repeat, dim=1)
        else:
            shortcut = self.project(x)
        return self.act(self.convs(x) + shortcut)


class _Up(nn.Module):
    """Transposed 2x2x2 conv to C/2, concatenated with the C/2 skip, residual stage at C channels."""

    def __init__(self, spatial_dims, c_in, c_out, n_convs, kernel_size, norm, activation, dropout):
        super().__init__()
        half = c_out // 2
        self.up = nn.Sequential(
            _conv_transpose_cls(spatial_dims)(c_in, half, 2, stride=2, bias=norm is None),
            _norm(norm, spatial_dims, half),
            _act(activation, half),
        )
        self.stage = _ResidualStage(spatial_dims, c_out, n_convs, kernel_size, norm, activation, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.stage(torch.cat([self.up(x), skip], dim=1))


class VNet(_FreezableMixin, nn.Module):
    """V-Net for volumetric segmentation.

    Encoder stage i (width base * 2**i) is a residual stage of `convs_per_stage[i]` convolutions with
    `kernel_size`**3 kernels and PReLU; stages are joined by 2x2x2 convolutions with stride 2 that double
    the channels. The decoder mirrors it: a 2x2x2 transposed conv, concatenation with the skip (so the
    decoder stage at level i has 2 * base * 2**i channels), a residual stage with the same number of
    convs as the encoder stage of that level; a 1x1 conv head gives the logits. The paper uses no
    normalisation (default `norm=None`; MONAI's VNet adds BatchNorm, `norm="batch"`). With a
    multi-channel input whose channel count does not divide `base_width`, the input shortcut is a 1x1
    conv instead of the paper's channel replication.

    Reference: Milletari, Navab & Ahmadi, "V-Net: Fully Convolutional Neural Networks for Volumetric
    Medical Image Segmentation", 3DV 2016 (convs per stage 1, 2, 3, 3, 3; widths 16 ... 256).

    Shapes: `(N, C_in, Z, Y, X)` -> logits `(N, C_out, Z, Y, X)` (or 2-D `(N, C, Y, X)` with
    `spatial_dims=2`, not in the paper). Spatial sizes must be multiples of `size_divisor` = 2**(depth-1).

    Args:
        spatial_dims: 3 (the paper) or 2.
        in_channels: input channels.
        out_channels: output channels.
        base_width: channels of the first stage. Default 16.
        depth: number of resolution stages, 3-6. Default 5.
        convs_per_stage: convolutions per stage, shallowest first (depth entries; default the paper's
            1, 2, 3, 3, 3, extended with 3s for depth 6).
        kernel_size: convolution kernel size. Default 5.
        norm: None (paper), "instance", "batch" or "group".
        activation: "prelu" (paper), "leakyrelu" or "relu".
        dropout: dropout after each activation inside the stages. Default 0.

    Attributes:
        size_divisor, encoder_stages, heads: as in `UNet`.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        base_width: int = 16,
        depth: int = 5,
        convs_per_stage: Sequence[int] | None = None,
        kernel_size: int = 5,
        norm: str | None = None,
        activation: str = "prelu",
        dropout: float = 0.0,
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if not 3 <= depth <= 6:
            raise ValueError(f"depth (number of resolution stages) must be 3-6, got {depth}")
        convs = list(convs_per_stage) if convs_per_stage is not None else ([1, 2, 3, 3, 3, 3])[:depth]
        if len(convs) != depth or min(convs) < 1:
            raise ValueError(f"convs_per_stage needs {depth} positive entries, got {convs}")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.frozen_stages = 0
        self.widths = tuple(base_width * 2**i for i in range(depth))
        self.size_divisor: tuple[int, ...] = (2 ** (depth - 1),) * spatial_dims
        args = (kernel_size, norm, activation, dropout)
        self.encoder_stages = nn.ModuleList([_Input(spatial_dims, in_channels, self.widths[0], convs[0], *args)])
        for i in range(1, depth):
            self.encoder_stages.append(_Down(spatial_dims, self.widths[i - 1], self.widths[i], convs[i], *args))
        self.decoder_stages = nn.ModuleList()
        c_in = self.widths[-1]
        for level in range(depth - 2, -1, -1):
            c_out = 2 * self.widths[level]
            self.decoder_stages.append(_Up(spatial_dims, c_in, c_out, convs[level], *args))
            c_in = c_out
        self.heads = nn.ModuleList([_conv_cls(spatial_dims)(c_in, out_channels, 1)])
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(N, C_in, *S)` -> logits `(N, C_out, *S)`; S a multiple of `size_divisor`."""
        _check_input(x, self.spatial_dims, self.in_channels, self.size_divisor)
        skips = []
        h = x
        for stage in self.encoder_stages:
            h = stage(h)
            skips.append(h)
        for j, stage in enumerate(self.decoder_stages):
            h = stage(h, skips[len(skips) - 2 - j])
        return self.heads[0](h)
