"""Building blocks of the U-Net family, for 2-D `(N, C, Y, X)` and 3-D `(N, C, Z, Y, X)` tensors.

Every block takes `spatial_dims` (2 or 3) and picks the matching torch layers, so one class serves
both. Convolutions that are followed by a normalisation layer carry no bias (the norm's shift makes
it redundant); this is also what MONAI's `DynUNet` does, so parameter counts can be compared exactly.

Blocks are looked up by name in `BLOCKS` (one class and one line per new block). The modules a U-Net adds
around its stages (CBAM, attention gates, the dilated bottleneck) are in `voxseg.nets.extras`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from voxseg.nets.lean import lean_conv_norm_act, lean_wanted

__all__ = [
    "NORMS",
    "ACTIVATIONS",
    "BLOCKS",
    "ConvNormAct",
    "PlainBlock",
    "ResidualBlock",
    "DenseBlock",
]

NORMS = ("instance", "batch", "group")
ACTIVATIONS = ("leakyrelu", "relu", "prelu")

KernelLike = int | Sequence[int]


def _tuple(value: KernelLike, spatial_dims: int) -> tuple[int, ...]:
    """Broadcast an int to one value per spatial axis; check the length of a sequence."""
    if isinstance(value, int):
        return (value,) * spatial_dims
    out = tuple(int(v) for v in value)
    if len(out) != spatial_dims:
        raise ValueError(f"expected {spatial_dims} values (one per spatial axis), got {list(out)}")
    return out


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")


def _conv_cls(spatial_dims: int) -> type[nn.Module]:
    _check_dims(spatial_dims)
    return nn.Conv3d if spatial_dims == 3 else nn.Conv2d


def _conv_transpose_cls(spatial_dims: int) -> type[nn.Module]:
    _check_dims(spatial_dims)
    return nn.ConvTranspose3d if spatial_dims == 3 else nn.ConvTranspose2d


def _max_pool_cls(spatial_dims: int) -> type[nn.Module]:
    _check_dims(spatial_dims)
    return nn.MaxPool3d if spatial_dims == 3 else nn.MaxPool2d


def _interp_mode(spatial_dims: int) -> str:
    return "trilinear" if spatial_dims == 3 else "bilinear"


def _group_count(channels: int, max_groups: int = 8) -> int:
    """Largest number of groups <= `max_groups` that divides `channels` (Wu & He use 32; we cap at 8)."""
    for groups in range(min(max_groups, channels), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


def _norm(name: str | None, spatial_dims: int, channels: int) -> nn.Module:
    """A normalisation layer by name: "instance" (affine, as nnU-Net), "batch", "group" or None."""
    if name is None:
        return nn.Identity()
    if name == "instance":
        cls = nn.InstanceNorm3d if spatial_dims == 3 else nn.InstanceNorm2d
        return cls(channels, affine=True)
    if name == "batch":
        cls = nn.BatchNorm3d if spatial_dims == 3 else nn.BatchNorm2d
        return cls(channels)
    if name == "group":
        return nn.GroupNorm(_group_count(channels), channels)
    raise ValueError(f"unknown norm {name!r}; choose one of {', '.join(NORMS)} or None")


def _act(name: str, channels: int) -> nn.Module:
    """An activation by name: "leakyrelu" (slope 0.01, nnU-Net), "relu" or "prelu" (one slope per channel)."""
    if name == "leakyrelu":
        return nn.LeakyReLU(0.01, inplace=True)
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "prelu":
        return nn.PReLU(channels)
    raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")


def _same_padding(kernel: tuple[int, ...], dilation: int) -> tuple[int, ...]:
    return tuple(dilation * (k - 1) // 2 for k in kernel)


class ConvNormAct(nn.Sequential):
    """Convolution -> normalisation -> activation (-> dropout), with "same" padding.

    Shapes: `(N, C_in, *S)` -> `(N, C_out, *S / stride)`.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels C_in.
        out_channels: output channels C_out.
        kernel_size: odd kernel size, an int or one per axis. Default 3.
        stride: stride, an int or one per axis. Default 1.
        dilation: dilation rate (same on every axis). Default 1.
        norm: "instance", "batch", "group" or None (no norm: the conv then gets a bias).
        activation: "leakyrelu", "relu", "prelu" or None (no activation).
        dropout: element-wise dropout probability applied after the activation. Default 0.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: KernelLike = 3,
        stride: KernelLike = 1,
        dilation: int = 1,
        norm: str | None = "instance",
        activation: str | None = "leakyrelu",
        dropout: float = 0.0,
    ):
        kernel = _tuple(kernel_size, spatial_dims)
        layers: list[nn.Module] = [
            _conv_cls(spatial_dims)(
                in_channels,
                out_channels,
                kernel,
                stride=_tuple(stride, spatial_dims),
                padding=_same_padding(kernel, dilation),
                dilation=dilation,
                bias=norm is None,
            ),
            _norm(norm, spatial_dims, out_channels),
        ]
        if activation is not None:
            layers.append(_act(activation, out_channels))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(N, C_in, *S)` -> `(N, C_out, *S / stride)`; at inference the memory-lean path (same maths)."""
        if lean_wanted(self):
            return lean_conv_norm_act(self, [x])
        return super().forward(x)


class PlainBlock(nn.Module):
    """`n_convs` x (conv - norm - activation), the first conv strided: the nnU-Net / U-Net stage.

    Reference: Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation",
    MICCAI 2015; Isensee et al., "nnU-Net", Nature Methods 18, 2021 (conv3 - InstanceNorm - LeakyReLU(0.01)).

    Shapes: `(N, C_in, *S)` -> `(N, C_out, *S / stride)`.

    Args:
        spatial_dims: 2 or 3.
        in_channels: C_in.
        out_channels: C_out.
        kernel_size: kernel size of every conv (int or per axis). Default 3.
        stride: stride of the first conv (down-sampling). Default 1.
        norm, activation, dropout: as in `ConvNormAct`.
        n_convs: number of convolutions. Default 2.
        mid_channels: output channels of the first conv (default C_out). Çiçek et al. (2016) double
            the channels inside a stage, i.e. `mid_channels = C_out // 2` in the encoder.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: KernelLike = 3,
        stride: KernelLike = 1,
        norm: str | None = "instance",
        activation: str = "leakyrelu",
        dropout: float = 0.0,
        n_convs: int = 2,
        mid_channels: int | None = None,
    ):
        super().__init__()
        if n_convs < 1:
            raise ValueError(f"n_convs must be >= 1, got {n_convs}")
        mid = out_channels if mid_channels is None or n_convs == 1 else mid_channels
        layers = []
        for i in range(n_convs):
            c_in = in_channels if i == 0 else mid
            c_out = mid if i < n_convs - 1 else out_channels
            layers.append(
                ConvNormAct(
                    spatial_dims, c_in, c_out, kernel_size, stride if i == 0 else 1, 1, norm, activation, dropout
                )
            )
        self.convs = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(N, C_in, *S)` -> `(N, C_out, *S / stride)`."""
        return self.convs(x)

    def forward_parts(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """`forward(torch.cat(parts, 1))` at inference without building the concatenation (the list is
        emptied as soon as the inputs are no longer needed, so their memory can be freed)."""
        h = lean_conv_norm_act(self.convs[0], parts)
        for layer in list(self.convs)[1:]:
            h = layer(h)
        return h


class ResidualBlock(nn.Module):
    """Residual "basic" block with a short skip: act(norm(conv(act(norm(conv(x))))) + shortcut(x)).

    The shortcut is the identity, or a strided 1x1 conv + norm when channels or resolution change
    (He et al. 2016, option B). Same layout as nnU-Net's residual encoder and MONAI's `UnetResBlock`.

    Reference: Drozdzal et al., "The Importance of Skip Connections in Biomedical Image Segmentation",
    DLMIA 2016 (short skips inside a U-Net; used via Chlebus et al. 2018 in Wang & Tang (2020)). Note: Drozdzal et
    al. use the pre-activation order (BN-ReLU-conv) of He et al. 2016b, while Wang & Tang (2020) describes
    conv-BN-ReLU. We use the post-activation order (He et al. 2016a), so that the first block sees raw
    intensities through a conv (not through ReLU) and the segmentation head needs no extra norm/act; the
    short-skip idea of the paper is unchanged.

    Shapes: `(N, C_in, *S)` -> `(N, C_out, *S / stride)`.

    Args:
        spatial_dims, in_channels, out_channels, kernel_size, stride, norm, activation, dropout:
            as in `PlainBlock`.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: KernelLike = 3,
        stride: KernelLike = 1,
        norm: str | None = "instance",
        activation: str = "leakyrelu",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.conv1 = ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size, stride, 1, norm, activation, dropout)
        self.conv2 = ConvNormAct(spatial_dims, out_channels, out_channels, kernel_size, 1, 1, norm, None)
        strides = _tuple(stride, spatial_dims)
        if in_channels != out_channels or any(s != 1 for s in strides):
            self.shortcut: nn.Module = ConvNormAct(spatial_dims, in_channels, out_channels, 1, strides, 1, norm, None)
        else:
            self.shortcut = nn.Identity()
        self.act = _act(activation, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(N, C_in, *S)` -> `(N, C_out, *S / stride)`."""
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class DenseBlock(nn.Module):
    """Densely connected stage: an entry conv, `n_layers` dense layers, and a 1x1 transition conv.

    Entry: conv(C_in -> C_out, stride). Dense layer j: conv(C_out + j*g -> g) on the concatenation of
    all previous feature maps, growth rate g = max(C_out // 2, 1). Transition: 1x1 conv back to C_out.
    Every conv is followed by norm and activation (post-activation, as the other voxseg blocks).

    Reference: Huang et al., "Densely Connected Convolutional Networks", CVPR 2017; used inside a
    U-Net by Li et al., "H-DenseUNet", IEEE TMI 2018.

    Shapes: `(N, C_in, *S)` -> `(N, C_out, *S / stride)`.

    Args:
        spatial_dims, in_channels, out_channels, kernel_size, stride, norm, activation, dropout:
            as in `PlainBlock`.
        n_layers: number of dense layers. Default 2.
        growth_rate: channels added per dense layer (default C_out // 2).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: KernelLike = 3,
        stride: KernelLike = 1,
        norm: str | None = "instance",
        activation: str = "leakyrelu",
        dropout: float = 0.0,
        n_layers: int = 2,
        growth_rate: int | None = None,
    ):
        super().__init__()
        growth = growth_rate or max(out_channels // 2, 1)
        self.entry = ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size, stride, 1, norm, activation, dropout)
        self.layers = nn.ModuleList(
            ConvNormAct(spatial_dims, out_channels + j * growth, growth, kernel_size, 1, 1, norm, activation, dropout)
            for j in range(n_layers)
        )
        self.transition = ConvNormAct(spatial_dims, out_channels + n_layers * growth, out_channels, 1, 1, 1, norm, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(N, C_in, *S)` -> `(N, C_out, *S / stride)`."""
        features = [self.entry(x)]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return self.transition(torch.cat(features, dim=1))


BLOCKS: dict[str, type[nn.Module]] = {
    "plain": PlainBlock,
    "residual": ResidualBlock,
    "dense": DenseBlock,
}
