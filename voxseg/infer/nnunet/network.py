"""nnU-Net's networks in plain torch, built from a plans configuration's ``architecture`` entry, with state-dict
keys identical to ``dynamic_network_architectures``' (Isensee et al. 2021; ResEnc presets: Isensee et al. 2024):

- ``PlainConvUNet``: per stage ``n_conv_per_stage`` conv -> (dropout) -> norm -> nonlin blocks, the first one
  strided; a transposed-convolution decoder with skip concatenation and a 1x1 segmentation layer per stage
  (only the last one used at inference).
- ``ResidualEncoderUNet``: a stem block, then per stage ``n_blocks_per_stage`` basic residual blocks (the
  first strided, its skip an average pool plus a 1x1 projection); the same decoder.

Each conv block registers its layers both by name (``conv``, ``norm``) and in ``all_modules``, so every weight
appears under two keys, as in the original. Only inference is needed: no deep supervision, no initialisation.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from voxseg.errors import InputError

__all__ = ["NNUNET_ARCHITECTURES", "build_nnunet_network"]

NNUNET_ARCHITECTURES = {
    "PlainConvUNet": "nnU-Net's default U-Net (dynamic_network_architectures PlainConvUNet)",
    "ResidualEncoderUNet": "nnU-Net ResEnc M/L/XL presets (dynamic_network_architectures ResidualEncoderUNet)",
}
"""Class names of ``architecture.network_class_name`` (last dotted part) that voxseg builds."""

_LAYERS = {cls.__name__: cls for cls in (
    nn.Conv2d, nn.Conv3d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.Dropout, nn.Dropout2d, nn.Dropout3d, nn.LeakyReLU, nn.ReLU, nn.GELU, nn.ELU)}
"""torch layers by class name; plans name them by a dotted path under ``torch.nn`` (e.g.
``torch.nn.modules.conv.Conv3d``)."""


class _Ops:
    """The layer classes and their keyword arguments shared by every block."""

    def __init__(self, kw: dict):
        self.conv = kw["conv_op"]
        self.dims = 3 if self.conv is nn.Conv3d else 2
        self.bias = bool(kw.get("conv_bias", False))
        self.norm, self.norm_kw = kw.get("norm_op"), kw.get("norm_op_kwargs") or {}
        self.drop, self.drop_kw = kw.get("dropout_op"), kw.get("dropout_op_kwargs") or {}
        self.nonlin, self.nonlin_kw = kw.get("nonlin"), kw.get("nonlin_kwargs") or {}

    def vec(self, value: int | Sequence[int]) -> list[int]:
        return [int(value)] * self.dims if isinstance(value, int) else [int(v) for v in value]


class _ConvBlock(nn.Module):
    """conv -> dropout -> norm -> nonlin (``ConvDropoutNormReLU``); ``act=False`` leaves out dropout and
    nonlin (the second conv and the projection of a residual block)."""

    def __init__(self, ops: _Ops, cin: int, cout: int, kernel, stride, act: bool = True, bias: bool | None = None,
                 nonlin_first: bool = False):
        super().__init__()
        kernel, stride = ops.vec(kernel), ops.vec(stride)
        self.conv = ops.conv(cin, cout, kernel, stride, padding=[(k - 1) // 2 for k in kernel],
                             bias=ops.bias if bias is None else bias)
        layers = [self.conv]
        if act and ops.drop is not None:
            self.dropout = ops.drop(**ops.drop_kw)
            layers.append(self.dropout)
        if ops.norm is not None:
            self.norm = ops.norm(cout, **ops.norm_kw)
            layers.append(self.norm)
        if act and ops.nonlin is not None:
            self.nonlin = ops.nonlin(**ops.nonlin_kw)
            layers.append(self.nonlin)
            if nonlin_first and ops.norm is not None:
                layers[-1], layers[-2] = layers[-2], layers[-1]
        self.all_modules = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.all_modules(x)


class _Stacked(nn.Module):
    """``StackedConvBlocks``: ``n`` conv blocks, the first with ``stride``."""

    def __init__(self, ops: _Ops, n: int, cin: int, cout: int, kernel, stride, nonlin_first: bool = False):
        super().__init__()
        self.convs = nn.Sequential(*[_ConvBlock(ops, cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1,
                                                nonlin_first=nonlin_first) for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class _AvgPool(nn.Module):
    """Average pooling with kernel = stride (the strided residual skip); bf16 input is pooled in float32, as
    torch's CPU pooling has no bf16 kernel for 3-D (the bf16 inference copy runs without autocast)."""

    def __init__(self, dims: int, stride):
        super().__init__()
        self.pool = F.avg_pool3d if dims == 3 else F.avg_pool2d
        self.stride = tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.bfloat16:
            return self.pool(x.float(), self.stride, self.stride).to(x.dtype)
        return self.pool(x, self.stride, self.stride)


class _BasicBlockD(nn.Module):
    """Residual block: conv-norm-nonlin, conv-norm, plus the skip (avg-pool when strided, 1x1 projection when
    the width changes), then nonlin."""

    def __init__(self, ops: _Ops, cin: int, cout: int, kernel, stride):
        super().__init__()
        stride = ops.vec(stride)
        self.conv1 = _ConvBlock(ops, cin, cout, kernel, stride)
        self.conv2 = _ConvBlock(ops, cout, cout, kernel, 1, act=False)
        self.nonlin2 = ops.nonlin(**ops.nonlin_kw) if ops.nonlin is not None else nn.Identity()
        skip = []
        if any(s != 1 for s in stride):
            skip.append(_AvgPool(ops.dims, stride))
        if cin != cout:
            skip.append(_ConvBlock(ops, cin, cout, 1, 1, act=False, bias=False))
        self.skip = nn.Sequential(*skip) if skip else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        out += self.skip(x)
        return self.nonlin2(out)


class _StackedResidual(nn.Module):
    def __init__(self, ops: _Ops, n: int, cin: int, cout: int, kernel, stride):
        super().__init__()
        self.blocks = nn.Sequential(*[_BasicBlockD(ops, cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1)
                                      for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class _Encoder(nn.Module):
    def __init__(self, ops: _Ops, kw: dict, cin: int, residual: bool):
        super().__init__()
        n, feats, kernels, strides = kw["n_stages"], _per_stage(kw, "features_per_stage"), kw["kernel_sizes"], \
            kw["strides"]
        kernels = kernels if isinstance(kernels, list) else [kernels] * n
        strides = strides if isinstance(strides, list) else [strides] * n
        self.kernel_sizes, self.strides, self.output_channels = kernels, [ops.vec(s) for s in strides], feats
        if residual:
            blocks = _per_stage(kw, "n_blocks_per_stage")
            stem = kw.get("stem_channels") or feats[0]
            self.stem = _Stacked(ops, 1, cin, stem, kernels[0], 1)
            cin = stem
            stages = [_StackedResidual(ops, blocks[s], cin if s == 0 else feats[s - 1], feats[s], kernels[s],
                                       strides[s]) for s in range(n)]
        else:
            self.stem = None
            convs = _per_stage(kw, "n_conv_per_stage")
            first = bool(kw.get("nonlin_first", False))
            stages = [nn.Sequential(_Stacked(ops, convs[s], cin if s == 0 else feats[s - 1], feats[s], kernels[s],
                                             strides[s], first)) for s in range(n)]
        self.stages = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.stem is not None:
            x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class _Decoder(nn.Module):
    def __init__(self, ops: _Ops, encoder: _Encoder, num_classes: int, n_convs: list[int], nonlin_first: bool):
        super().__init__()
        self.encoder = encoder  # registered here too, as in the original: its weights appear under decoder.encoder.*
        feats, transp = encoder.output_channels, nn.ConvTranspose3d if ops.dims == 3 else nn.ConvTranspose2d
        stages, ups, segs = [], [], []
        for s in range(1, len(feats)):
            below, skip, stride = feats[-s], feats[-(s + 1)], encoder.strides[-s]
            ups.append(transp(below, skip, stride, stride, bias=ops.bias))
            stages.append(_Stacked(ops, n_convs[s - 1], 2 * skip, skip, encoder.kernel_sizes[-(s + 1)], 1,
                                   nonlin_first))
            segs.append(ops.conv(skip, num_classes, 1, 1, 0, bias=True))
        self.stages, self.transpconvs, self.seg_layers = nn.ModuleList(stages), nn.ModuleList(ups), nn.ModuleList(segs)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        x = skips[-1]
        for s, stage in enumerate(self.stages):
            x = stage(torch.cat((self.transpconvs[s](x), skips[-(s + 2)]), 1))
        return self.seg_layers[-1](x)


class _UNet(nn.Module):
    def __init__(self, kw: dict, in_channels: int, num_classes: int, residual: bool):
        super().__init__()
        ops = _Ops(kw)
        self.encoder = _Encoder(ops, kw, in_channels, residual)
        n_dec = kw["n_conv_per_stage_decoder"]
        n_dec = n_dec if isinstance(n_dec, list) else [n_dec] * (kw["n_stages"] - 1)
        first = bool(kw.get("nonlin_first", False)) and not residual
        self.decoder = _Decoder(ops, self.encoder, num_classes, n_dec, first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _per_stage(kw: dict, key: str) -> list[int]:
    value = kw[key]
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)] * int(kw["n_stages"])


def _resolved_kwargs(arch: dict, source) -> dict:
    """``arch_kwargs`` with the ``_kw_requires_import`` entries (dotted names) turned into torch classes."""
    kw = dict(arch.get("arch_kwargs", {}))
    for key in arch.get("_kw_requires_import", []):
        name = kw.get(key)
        if name is None:
            continue
        short = str(name).rsplit(".", 1)[-1]
        if not str(name).startswith("torch.nn.") or short not in _LAYERS:
            raise InputError(source, f"architecture uses {key}={name!r}, which voxseg does not build "
                                     f"(it builds torch.nn {', '.join(sorted(_LAYERS))})")
        kw[key] = _LAYERS[short]
    block = kw.pop("block", None)
    if block is not None and not str(block).endswith("BasicBlockD"):
        raise InputError(source, f"residual block {block!r} is not supported (only BasicBlockD)")
    unsupported = {k for k in ("squeeze_excitation", "pool_type", "pool") if kw.get(k) not in (None, False, "conv")}
    if unsupported:
        raise InputError(source, f"architecture options {', '.join(sorted(unsupported))} are not supported")
    return kw


def build_nnunet_network(architecture: dict, in_channels: int, num_classes: int, source="plans.json") -> nn.Module:
    """The network of a plans configuration's ``architecture`` entry, in eval mode, random weights.

    Args:
        architecture: ``{"network_class_name": ..., "arch_kwargs": {...}, "_kw_requires_import": [...]}``.
        in_channels: image channels (``dataset.json`` ``channel_names``).
        num_classes: output channels: labels including background, or foreground regions.
        source: the file named in errors.

    Raises:
        InputError: an architecture or layer type other than those in :data:`NNUNET_ARCHITECTURES`.
    """
    cls = str(architecture.get("network_class_name", "")).rsplit(".", 1)[-1]
    if cls not in NNUNET_ARCHITECTURES:
        raise InputError(source, f"network {architecture.get('network_class_name')!r} is not supported "
                                 f"(voxseg runs {', '.join(NNUNET_ARCHITECTURES)})")
    kw = _resolved_kwargs(architecture, source)
    try:
        net = _UNet(kw, in_channels, num_classes, residual=cls == "ResidualEncoderUNet")
    except (KeyError, TypeError, IndexError) as exc:
        raise InputError(source, f"architecture arch_kwargs incomplete or malformed ({exc!r})") from None
    return net.eval()
