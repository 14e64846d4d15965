"""Modules a U-Net adds around its stages: channel/spatial attention (CBAM), attention gates on the skip
connections, and the dilated bottleneck. 2-D `(N, C, Y, X)` or 3-D `(N, C, Z, Y, X)`, as `voxseg.nets.blocks`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from voxseg.nets.blocks import ConvNormAct, KernelLike, _conv_cls, _interp_mode, _tuple

__all__ = ["CBAM", "AttentionGate", "DilatedBottleneck"]


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel attention, then spatial attention.

    Channel: M_c = sigmoid(MLP(avgpool(F)) + MLP(maxpool(F))), MLP = 1x1 conv C -> C/r -> C with ReLU.
    Spatial: M_s = sigmoid(conv_k([mean_c(F'); max_c(F')])), k = 7. Output F'' = M_s * (M_c * F).
    Following the paper, the spatial conv has no normalisation (the authors' code adds a BatchNorm).

    Reference: Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018; placed at the end of
    each encoder stage as in Henry et al., "Brain tumor segmentation with self-ensembled, deeply-
    supervised 3D U-net neural networks", BrainLes 2020 (Henry et al. 2021).

    Shapes: `(N, C, *S)` -> `(N, C, *S)`.

    Args:
        spatial_dims: 2 or 3.
        channels: C.
        reduction: channel reduction ratio r of the MLP (hidden = max(C // r, 1)). Default 16.
        kernel_size: spatial-attention kernel. Default 7.
    """

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        conv = _conv_cls(spatial_dims)
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(conv(channels, hidden, 1), nn.ReLU(inplace=True), conv(hidden, channels, 1))
        self.spatial = conv(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(N, C, *S)` -> `(N, C, *S)`."""
        dims = tuple(range(2, x.ndim))
        avg = x.mean(dim=dims, keepdim=True)
        mx = x.amax(dim=dims, keepdim=True)
        x = x * torch.sigmoid(self.mlp(avg) + self.mlp(mx))
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class AttentionGate(nn.Module):
    """Additive attention gate on a U-Net skip connection.

    alpha = sigmoid(psi(ReLU(W_x x + W_g g))) computed at the coarse resolution of the gating signal g
    (W_x is a conv with kernel = stride = the down-sampling factor, W_g a 1x1 conv), resampled
    (bi/tri-linearly) to the resolution of x; output x * alpha. Following the paper's equations, the
    gated skip is returned as is (the authors' code adds a 1x1 conv + BatchNorm after it).

    Reference: Oktay et al., "Attention U-Net: Learning Where to Look for the Pancreas", MIDL 2018.

    Shapes: x `(N, C_x, *S)`, g `(N, C_g, *S / factor)` -> `(N, C_x, *S)`.

    Args:
        spatial_dims: 2 or 3.
        skip_channels: C_x, channels of the skip features x.
        gate_channels: C_g, channels of the gating signal g (the coarser decoder features).
        inter_channels: channels of the intermediate space (default max(C_x // 2, 1)).
        factor: resolution ratio between x and g, an int or one per axis. Default 2.
    """

    def __init__(
        self,
        spatial_dims: int,
        skip_channels: int,
        gate_channels: int,
        inter_channels: int | None = None,
        factor: KernelLike = 2,
    ):
        super().__init__()
        conv = _conv_cls(spatial_dims)
        inter = inter_channels or max(skip_channels // 2, 1)
        factors = _tuple(factor, spatial_dims)
        self.theta_x = conv(skip_channels, inter, factors, stride=factors, bias=False)
        self.phi_g = conv(gate_channels, inter, 1, bias=True)
        self.psi = conv(inter, 1, 1, bias=True)
        self.mode = _interp_mode(spatial_dims)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """x `(N, C_x, *S)`, g `(N, C_g, *S / factor)` -> gated x `(N, C_x, *S)`."""
        q = F.relu(self.theta_x(x) + self.phi_g(g))
        alpha = torch.sigmoid(self.psi(q))
        alpha = F.interpolate(alpha, size=x.shape[2:], mode=self.mode, align_corners=False)
        return x * alpha


class DilatedBottleneck(nn.Module):
    """Pseudo extra stage at the deepest resolution: dilated convs, concatenated with their input, fused.

    Two (conv3 dilation 2 - norm - act) are applied to the last encoder stage output F; [F; dil(F)]
    (2C channels) is fused back to C by one conv3 - norm - act (the "decoder stage at the lowest
    resolution made of only one 3x3x3 convolution" of the paper).

    Reference: Henry et al., "Brain tumor segmentation with self-ensembled, deeply-supervised 3D U-net
    neural networks: a BraTS 2020 challenge solution", BrainLes 2020 (Henry et al. 2021); dilation trick of
    Chen et al., DeepLab, TPAMI 2018.

    Shapes: `(N, C, *S)` -> `(N, C, *S)`.

    Args:
        spatial_dims: 2 or 3.
        channels: C.
        dilation: dilation rate. Default 2.
        n_convs: number of dilated convs. Default 2.
        norm, activation, dropout: as in `ConvNormAct`.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        dilation: int = 2,
        n_convs: int = 2,
        norm: str | None = "instance",
        activation: str = "leakyrelu",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.dilated = nn.Sequential(
            *(ConvNormAct(spatial_dims, channels, channels, 3, 1, dilation, norm, activation, dropout) for _ in range(n_convs))
        )
        self.fuse = ConvNormAct(spatial_dims, 2 * channels, channels, 3, 1, 1, norm, activation, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(N, C, *S)` -> `(N, C, *S)`."""
        return self.fuse(torch.cat([x, self.dilated(x)], dim=1))
