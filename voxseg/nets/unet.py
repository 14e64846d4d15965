"""The configurable U-Net behind most voxseg presets (2-D `(N, C, Y, X)` or 3-D `(N, C, Z, Y, X)`)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from voxseg.nets._base import _check_input, _FreezableMixin
from voxseg.nets.lean import lean_conv, lean_conv_transpose, lean_wanted
from voxseg.nets.blocks import (
    ACTIVATIONS,
    BLOCKS,
    NORMS,
    PlainBlock,
    _conv_cls,
    _conv_transpose_cls,
    _interp_mode,
    _max_pool_cls,
    _tuple,
)
from voxseg.nets.extras import CBAM, AttentionGate, DilatedBottleneck

__all__ = ["UNet"]

_DOWN = ("strided", "maxpool")
_UP = ("transposed", "interp")
_ATTENTION = (None, "cbam", "gate")
_DROPOUT_WHERE = ("decoder", "encoder", "both")


def _choice(name: str, value, allowed: Sequence) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {', '.join(map(repr, allowed))}")


@contextlib.contextmanager
def _keep_norm_statistics(module: nn.Module) -> Iterator[None]:
    """Save the running statistics of the module's training-mode batch norms; put them back on exit."""
    saved = [(b, b.detach().clone()) for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
             for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def _checkpointed(module: nn.Module, *inputs: torch.Tensor, enabled: bool = True) -> torch.Tensor:
    """`module(*inputs)`, under non-reentrant gradient checkpointing when enabled, training and recording.

    The recomputation in the backward pass would update batch-norm running statistics a second time:
    they are restored after it. Dropout masks are reproduced (torch restores the RNG state).
    """
    if not (enabled and module.training and torch.is_grad_enabled()):
        return module(*inputs)
    return checkpoint(module, *inputs, use_reentrant=False,
                      context_fn=lambda: (contextlib.nullcontext(), _keep_norm_statistics(module)))


def _init_weights(module: nn.Module) -> None:
    """He initialisation for LeakyReLU(0.01), zero biases (as nnU-Net's InitWeights_He)."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=0.01)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _check_options(spatial_dims: int, in_channels: int, out_channels: int, base_width: int, depth: int, norm: str,
                   activation: str, dropout: float, dropout_where: str, down: str, up: str, block: str,
                   attention: str | None, mid_width_ratio: float) -> None:
    """Raise ValueError naming the first `UNet` option that is out of range or not a known choice."""
    _choice("spatial_dims", spatial_dims, (2, 3))
    _choice("norm", norm, NORMS)
    _choice("activation", activation, ACTIVATIONS)
    _choice("dropout_where", dropout_where, _DROPOUT_WHERE)
    _choice("down", down, _DOWN)
    _choice("up", up, _UP)
    _choice("block", block, tuple(BLOCKS))
    _choice("attention", attention, _ATTENTION)
    if not 3 <= depth <= 6:
        raise ValueError(f"depth (number of resolution stages) must be 3-6, got {depth}")
    if in_channels < 1 or out_channels < 1 or base_width < 1:
        raise ValueError("in_channels, out_channels and base_width must be positive")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if mid_width_ratio != 1.0 and block != "plain":
        raise ValueError("mid_width_ratio is only supported with block='plain'")


def _per_stage_sizes(
    spatial_dims: int, depth: int, strides: Sequence | None, kernel_sizes: Sequence | None
) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """`(strides, kernel sizes)` with one value per spatial axis: depth - 1 strides (default 2) and depth odd
    kernel sizes (default 3). Raises ValueError on a wrong count or an even kernel size."""
    strides = [2] * (depth - 1) if strides is None else list(strides)
    if len(strides) != depth - 1:
        raise ValueError(f"strides needs depth - 1 = {depth - 1} entries, got {len(strides)}")
    stride_t = [_tuple(s, spatial_dims) for s in strides]
    kernel_sizes = [3] * depth if kernel_sizes is None else list(kernel_sizes)
    if len(kernel_sizes) != depth:
        raise ValueError(f"kernel_sizes needs depth = {depth} entries, got {len(kernel_sizes)}")
    kernel_t = [_tuple(k, spatial_dims) for k in kernel_sizes]
    if any(k % 2 == 0 for ks in kernel_t for k in ks):
        raise ValueError(f"kernel sizes must be odd, got {kernel_sizes}")
    return stride_t, kernel_t


def _build_encoder(spatial_dims: int, in_channels: int, widths: Sequence[int], stride_t: list[tuple[int, ...]],
                   kernel_t: list[tuple[int, ...]], down: str, block_cls: type[nn.Module], attention: str | None,
                   mid_width_ratio: float, dropout: float, common: dict) -> nn.ModuleList:
    """Encoder stages: stage 0 at full resolution, stage i down-samples by `stride_t[i - 1]` (first conv
    strided, or a max-pool before the stage), then the block, then CBAM when `attention == "cbam"`."""
    stages = nn.ModuleList()
    for i, width in enumerate(widths):
        c_in = in_channels if i == 0 else widths[i - 1]
        layers: list[nn.Module] = []
        stride: tuple[int, ...] | int = 1
        if i > 0 and down == "maxpool":
            layers.append(_max_pool_cls(spatial_dims)(stride_t[i - 1], stride_t[i - 1]))
        elif i > 0:
            stride = stride_t[i - 1]
        extra = {}
        if mid_width_ratio != 1.0:
            extra["mid_channels"] = max(round(width * mid_width_ratio), 1)
        layers.append(block_cls(spatial_dims, c_in, width, kernel_t[i], stride, dropout=dropout, **common, **extra))
        if attention == "cbam":
            layers.append(CBAM(spatial_dims, width))
        stages.append(nn.Sequential(*layers))
    return stages


def _build_decoder(spatial_dims: int, widths: Sequence[int], stride_t: list[tuple[int, ...]],
                   kernel_t: list[tuple[int, ...]], up: str, block_cls: type[nn.Module], attention: str | None,
                   dropout: float, common: dict) -> tuple[nn.ModuleList, nn.ModuleList, nn.ModuleList]:
    """`(ups, gates, decoder_blocks)`, deepest level first (level = depth - 2 ... 0).

    An up-sampling module takes level + 1 to level and sets the skip's channels (transposed conv, or
    interpolation + 1x1 conv); `gates` is empty unless `attention == "gate"`; a decoder block maps the
    concatenation [up-sampled; skip] (2 x skip channels) to the skip's channels.
    """
    conv = _conv_cls(spatial_dims)
    ups, gates, blocks = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
    for level in range(len(widths) - 2, -1, -1):
        c_low, c_skip, s = widths[level + 1], widths[level], stride_t[level]
        if up == "transposed":
            ups.append(_conv_transpose_cls(spatial_dims)(c_low, c_skip, s, stride=s, bias=False))
        else:
            ups.append(
                nn.Sequential(
                    nn.Upsample(scale_factor=tuple(float(v) for v in s), mode=_interp_mode(spatial_dims)),
                    conv(c_low, c_skip, 1, bias=False),
                )
            )
        if attention == "gate":
            gates.append(AttentionGate(spatial_dims, c_skip, c_low, factor=s))
        blocks.append(block_cls(spatial_dims, 2 * c_skip, c_skip, kernel_t[level], 1, dropout=dropout, **common))
    return ups, gates, blocks


class UNet(_FreezableMixin, nn.Module):
    """U-Net with interchangeable stages, down/up-sampling, attention and deep supervision.

    The default configuration is the nnU-Net "plain" U-Net: each resolution stage is two
    (conv3 - InstanceNorm - LeakyReLU(0.01)), down-sampling by the first conv of a stage with stride 2,
    up-sampling by a transposed conv (kernel = stride) that also halves the channels, skip features
    concatenated, widths base * 2**i capped at `max_width`, and a 1x1 conv head producing logits.

    References:
        Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation", MICCAI 2015.
        Çiçek et al., "3D U-Net: Learning Dense Volumetric Segmentation from Sparse Annotation", MICCAI 2016.
        Isensee et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image
        segmentation", Nature Methods 18, 2021.
        Options: see `ResidualBlock`, `DenseBlock`, `CBAM`, `AttentionGate`, `DilatedBottleneck`.

    Deep supervision (Lee et al., "Deeply-Supervised Nets", AISTATS 2015) adds 1x1 heads on the decoder
    outputs at 1/2, 1/4, ... resolution (and on the bottleneck when `dilated_bottleneck`, as Henry et al.
    2021). The auxiliary logits are returned at their own resolution, as nnU-Net does (Henry et al.
    upsample them instead); the loss must down-sample the target.

    Shapes: input `(N, C_in, *S)` -> logits `(N, C_out, *S)`; in training mode with deep supervision a
    list `[(N, C_out, *S), (N, C_out, *S/2), (N, C_out, *S/4), ...]` (full resolution first). Every
    spatial size must be a multiple of `size_divisor` (ValueError otherwise, naming the allowed sizes).

    Args:
        spatial_dims: 2 (`(N, C, Y, X)`) or 3 (`(N, C, Z, Y, X)`).
        in_channels: input channels (image modalities).
        out_channels: output channels (classes or regions).
        base_width: channels of the first stage. Default 32.
        depth: number of resolution stages including the bottleneck stage, 3-6. Default 5.
        max_width: cap on the channels of any stage (nnU-Net: 320 in 3-D, 512 in 2-D); None = no cap.
            Default 320.
        norm: "instance" (affine), "batch" or "group" (8 groups, fewer when the width is not divisible).
        activation: "leakyrelu" (slope 0.01), "relu" or "prelu".
        dropout: dropout probability after each activation of the chosen blocks. Default 0.
        dropout_where: which blocks get dropout: "decoder", "encoder" (incl. bottleneck) or "both".
        down: "strided" (first conv of a stage has stride 2) or "maxpool" (max-pool, then the stage).
        up: "transposed" (transposed conv, kernel = stride) or "interp" ((bi/tri)linear up-sampling
            followed by a 1x1 conv that sets the channels).
        block: stage type, "plain" (n x conv-norm-act), "residual" or "dense".
        attention: None, "cbam" (CBAM at the end of every encoder stage) or "gate" (attention gates of
            Oktay et al. on every skip connection).
        dilated_bottleneck: add two dilated (rate 2) convs after the deepest stage, concatenated with
            its output and fused by one conv: a pseudo extra stage without down-sampling (Henry et al. 2021).
        deep_supervision: return auxiliary logits in training mode (see above).
        strides: per down-sampling step (depth - 1 entries) an int or one stride per axis, for
            anisotropic data; default 2 everywhere. `size_divisor` is their product per axis.
        kernel_sizes: per stage (depth entries) an odd int or one size per axis; default 3.
        mid_width_ratio: the first conv of every encoder stage outputs `round(width * ratio)` channels
            (plain blocks only). Çiçek et al. 2016 double the channels inside a stage: ratio 0.5.
        gradient_checkpointing: in training mode, keep only the inputs of each encoder stage and
            decoder block and recompute their activations in the backward pass (Chen et al., "Training
            Deep Nets with Sublinear Memory Cost", 2016): less memory for about one extra forward pass.
            Same outputs and gradients; no effect in eval mode or under `torch.no_grad()`. Default False.

    Attributes:
        size_divisor: tuple of ints, one per spatial axis.
        widths: channels of each stage, shallowest first.
        encoder_stages: `nn.ModuleList` of the encoder stages (used by `freeze_encoder`).
        heads: `nn.ModuleList` of 1x1 conv heads; `heads[0]` is the main output.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        base_width: int = 32,
        depth: int = 5,
        max_width: int | None = 320,
        norm: str = "instance",
        activation: str = "leakyrelu",
        dropout: float = 0.0,
        dropout_where: str = "decoder",
        down: str = "strided",
        up: str = "transposed",
        block: str = "plain",
        attention: str | None = None,
        dilated_bottleneck: bool = False,
        deep_supervision: bool = False,
        strides: Sequence[int | Sequence[int]] | None = None,
        kernel_sizes: Sequence[int | Sequence[int]] | None = None,
        mid_width_ratio: float = 1.0,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        _check_options(spatial_dims, in_channels, out_channels, base_width, depth, norm, activation, dropout,
                       dropout_where, down, up, block, attention, mid_width_ratio)
        stride_t, kernel_t = _per_stage_sizes(spatial_dims, depth, strides, kernel_sizes)

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.deep_supervision = deep_supervision
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self.frozen_stages = 0
        self.widths = tuple(min(base_width * 2**i, max_width or base_width * 2**i) for i in range(depth))
        divisor = [1] * spatial_dims
        for s in stride_t:
            divisor = [d * si for d, si in zip(divisor, s)]
        self.size_divisor: tuple[int, ...] = tuple(divisor)

        enc_p = dropout if dropout_where in ("encoder", "both") else 0.0
        dec_p = dropout if dropout_where in ("decoder", "both") else 0.0
        common = {"norm": norm, "activation": activation}
        # Modules are built in a fixed order (encoder, bottleneck, decoder, heads): weights drawn from the
        # global RNG then depend only on the seed.
        self.encoder_stages = _build_encoder(spatial_dims, in_channels, self.widths, stride_t, kernel_t, down,
                                             BLOCKS[block], attention, mid_width_ratio, enc_p, common)
        self.bottleneck: nn.Module | None = (
            DilatedBottleneck(spatial_dims, self.widths[-1], dropout=enc_p, **common) if dilated_bottleneck else None
        )
        self.ups, self.gates, self.decoder_blocks = _build_decoder(spatial_dims, self.widths, stride_t, kernel_t, up,
                                                                   BLOCKS[block], attention, dec_p, common)

        # Heads: level 0 (main), then 1 .. depth-2 (decoder), then depth-1 (dilated bottleneck).
        head_levels = [0]
        if deep_supervision:
            head_levels += list(range(1, depth - 1)) + ([depth - 1] if dilated_bottleneck else [])
        self.head_levels = tuple(head_levels)
        conv = _conv_cls(spatial_dims)
        self.heads = nn.ModuleList(conv(self.widths[lv], out_channels, 1) for lv in head_levels)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Segment a batch.

        Args:
            x: `(N, C_in, *S)`, every spatial size a multiple of `size_divisor`.

        Returns:
            Logits `(N, C_out, *S)`; in training mode with deep supervision a list of logits at full,
            1/2, 1/4, ... resolution.
        """
        _check_input(x, self.spatial_dims, self.in_channels, self.size_divisor)
        skips = []
        h = x
        ckpt = self.gradient_checkpointing
        for stage in self.encoder_stages:
            h = _checkpointed(stage, h, enabled=ckpt)
            skips.append(h)
        if self.bottleneck is not None:
            h = self.bottleneck(h)
        depth = len(skips)
        if lean_wanted(self):
            return self._forward_decoder_lean(h, skips)
        features: dict[int, torch.Tensor] = {depth - 1: h}
        for j, (up, block) in enumerate(zip(self.ups, self.decoder_blocks)):
            level = depth - 2 - j
            skip = skips[level]
            if len(self.gates):
                skip = self.gates[j](skip, h)
            h = _checkpointed(block, torch.cat([up(h), skip], dim=1), enabled=ckpt)
            features[level] = h
        if self.deep_supervision and self.training:
            return [head(features[lv]) for head, lv in zip(self.heads, self.head_levels)]
        return self.heads[0](h)

    def _forward_decoder_lean(self, h: torch.Tensor, skips: list[torch.Tensor | None]) -> torch.Tensor:
        """The decoder at inference: each skip is dropped once used, the concatenation is never built
        (see `voxseg.nets.lean`), so a 128^3 window needs ~3 full-resolution activations, not ~8."""
        depth = len(skips)
        for j, (up, block) in enumerate(zip(self.ups, self.decoder_blocks)):
            level = depth - 2 - j
            skip, skips[level] = skips[level], None
            if len(self.gates):
                skip = self.gates[j](skip, h)
            upsampled = lean_conv_transpose(up, h) if isinstance(up, nn.modules.conv._ConvTransposeNd) else up(h)
            parts = [upsampled, skip]
            del upsampled, skip, h
            if isinstance(block, PlainBlock):
                h = block.forward_parts(parts)
            else:
                h = block(torch.cat(parts, dim=1))
                parts.clear()
        parts = [h]
        del h
        return lean_conv(self.heads[0], parts)
