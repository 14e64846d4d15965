"""Memory-lean inference path of the conv layers (eval mode, no autograd): same maths, less RAM.

A plain forward pass of a 3-D U-Net holds about eight full-resolution activations at its peak: the
skip, the up-sampled tensor, their concatenation, oneDNN's reordered copies of the conv input and
output, and the norm's output. Here instead:

- a convolution is computed in slabs along the first spatial axis (each slab reads its halo of input
  rows), written into one preallocated output, so the library's temporary copies are slab-sized;
- a convolution over a channel concatenation ``cat([a, b])`` is ``conv(a, W_a) + conv(b, W_b)`` with the
  weight split by input channels, so the concatenation is never built;
- normalisation (instance, batch with running statistics, group) and the activation run in place.

Results equal the plain path up to float summation order (tests compare both for every preset).
Only used when ``not module.training and not torch.is_grad_enabled()`` and autocast is off: training
keeps the plain path. Time and peak memory of the inference pass: ``benchmarks/inference.py`` and
docs/benchmarks.md.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SLAB_BYTES", "lean_conv", "lean_conv_norm_act", "lean_conv_transpose", "lean_wanted", "norm_inplace"]

SLAB_BYTES = 4 * 2**20
"""Output bytes per slab of :func:`lean_conv`: about one core's L2 cache, so that each slab is written, summed
and normalised while it is in cache; larger slabs are slower, smaller ones add halo work per slab."""


def lean_wanted(module: nn.Module) -> bool:
    """True when ``module`` runs for inference only (eval mode, autograd off, no autocast: autocast's
    per-op casting rules are the plain path's; not while torch.compile or torch.jit.trace traces: the compiler
    plans memory itself, and a traced graph, as OpenVINO's converter and ONNX export take it, is the plain one)."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    return (not module.training and not torch.is_grad_enabled()
            and not any(torch.is_autocast_enabled(d) for d in ("cpu", "cuda")))


def _slab_rows(out_rows: int, bytes_per_row: int) -> int:
    return max(1, min(out_rows, SLAB_BYTES // max(bytes_per_row, 1)))


def _conv(fn, x: torch.Tensor, w: torch.Tensor, stride, padding, dilation) -> torch.Tensor:
    """One slab's convolution. On CPU, oneDNN is called directly: torch's size heuristic sends thin
    slabs to its im2col fallback, whose column buffer (27 x C_in x slab) would cost more RAM than
    the whole output."""
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) and w.dtype == x.dtype:
        fmt = _memory_format(w)
        return torch.mkldnn_convolution(x.contiguous(memory_format=fmt), w, None, list(padding), list(stride),
                                        list(dilation), 1)
    return fn(x, w, None, stride, padding, dilation)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels-last if ``x`` is stored so (and not also plainly contiguous), else contiguous."""
    cl = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
    if x.dim() in (4, 5) and x.is_contiguous(memory_format=cl) and not x.is_contiguous():
        return cl
    return torch.contiguous_format


def lean_conv(conv: nn.Module, parts: list[torch.Tensor], stats: list | None = None) -> torch.Tensor:
    """``conv(torch.cat(parts, 1))`` computed in slabs, without building the concatenation.

    Args:
        conv: an ``nn.Conv2d`` / ``nn.Conv3d`` with zero padding and ``groups == 1``.
        parts: tensors ``(N, C_i, *S)`` whose channels add up to ``conv.in_channels``; the list is
            emptied once they are no longer needed, so the caller should hold no other reference.

        stats: if a list is given (and the conv has no bias), the per-channel sum and sum of squares of
            the output, float64 ``(N, C_out)`` each, are appended to it: gathered slab by slab while
            each slab is in cache, they spare the norm a separate pass over the whole output.

    Returns:
        ``(N, C_out, *S_out)``, as the convolution of the concatenated input.
    """
    if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        x = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
        parts.clear()
        return conv(x)
    nd = conv.weight.dim() - 2
    fn = F.conv3d if nd == 3 else F.conv2d
    k, s, p, d = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    first = parts[0]
    n, spatial = first.shape[0], first.shape[2:]
    out_sp = [(spatial[i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(nd)]
    fmt = _memory_format(first)  # keep the caller's layout (channels-last avoids oneDNN's reorders)
    out = torch.empty((n, conv.out_channels, *out_sp), dtype=first.dtype, device=first.device, memory_format=fmt)
    weights, c0 = [], 0
    for t in parts:
        weights.append(conv.weight[:, c0:c0 + t.shape[1]].contiguous(memory_format=fmt))
        c0 += t.shape[1]
    if c0 != conv.in_channels:
        raise ValueError(f"inputs have {c0} channels in all, the convolution expects {conv.in_channels}")
    row_bytes = n * conv.out_channels * out[0, 0, 0].numel() * out.element_size()
    step = _slab_rows(out_sp[0], row_bytes)
    inner_pad = tuple(p[1:])
    want_stats = stats is not None and conv.bias is None
    dims = tuple(range(2, 2 + nd))
    total = torch.zeros(2, n, conv.out_channels, dtype=torch.float64, device=first.device) if want_stats else None
    for o0 in range(0, out_sp[0], step):
        o1 = min(o0 + step, out_sp[0])
        i0 = o0 * s[0] - p[0]
        i1 = (o1 - 1) * s[0] - p[0] + d[0] * (k[0] - 1) + 1
        lo, hi = max(i0, 0), min(i1, spatial[0])
        acc = None
        for t, w in zip(parts, weights):
            piece = t[:, :, lo:hi]
            if lo > i0 or hi < i1:
                piece = F.pad(piece, (0, 0) * (nd - 1) + (lo - i0, i1 - hi))
            y = _conv(fn, piece, w, s, (0,) + inner_pad, d)
            acc = y if acc is None else acc.add_(y)
        out[:, :, o0:o1] = acc
        if total is not None:
            total[0] += acc.sum(dims, dtype=torch.float64)
            total[1] += acc.square_().sum(dims, dtype=torch.float64)
        del acc
    parts.clear()
    if conv.bias is not None:
        out += conv.bias.view((1, -1) + (1,) * nd)
    if total is not None:
        stats.extend([total[0], total[1]])
    return out


def lean_conv_transpose(up: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``up(x)`` for a transposed conv whose kernel equals its stride (no overlap), in slabs."""
    nd = up.weight.dim() - 2
    simple = (tuple(up.kernel_size) == tuple(up.stride) and not any(up.padding) and not any(up.output_padding)
              and up.groups == 1 and all(v == 1 for v in up.dilation))
    if not simple:
        return up(x)
    fn = F.conv_transpose3d if nd == 3 else F.conv_transpose2d
    s = up.stride
    n, spatial = x.shape[0], x.shape[2:]
    out = x.new_empty((n, up.out_channels, *[spatial[i] * s[i] for i in range(nd)]))
    row_bytes = n * up.out_channels * out[0, 0, 0].numel() * out.element_size() * s[0]
    step = _slab_rows(spatial[0], row_bytes)
    for a in range(0, spatial[0], step):
        b = min(a + step, spatial[0])
        out[:, :, a * s[0]:b * s[0]] = fn(x[:, :, a:b], up.weight, up.bias, s)
    return out


def _var_mean_from_sums(sums: list[torch.Tensor], count: int) -> tuple[torch.Tensor, torch.Tensor]:
    mean = sums[0] / count
    var = (sums[1] / count - mean * mean).clamp_(min=0.0)
    return var, mean


def _affine_inplace(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``x * scale + shift`` in place, one rounding; scale and shift (float32 for bf16 activations) cast to
    ``x``'s dtype first: mixed-dtype in-place arithmetic made a whole bf16 network 1.7x slower."""
    return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype), out=x)


def norm_inplace(norm: nn.Module, x: torch.Tensor, sums: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Apply an eval-mode normalisation layer to ``x`` in place (other layers: out of place).

    ``sums``: optional per-channel ``[sum, sum of squares]`` of ``x`` (float64 ``(N, C)``, from
    :func:`lean_conv`), used instead of a pass over ``x`` for instance and group statistics."""
    nd = x.dim() - 2
    spatial = tuple(range(2, x.dim()))
    shape = (1, -1) + (1,) * nd
    if isinstance(norm, nn.Identity):
        return x
    if isinstance(norm, nn.modules.instancenorm._InstanceNorm) and not norm.track_running_stats:
        stat_dtype = torch.promote_types(x.dtype, torch.float32)  # bf16 activations: scale and shift in fp32
        if sums:
            var, mean = (t.to(stat_dtype).view(x.shape[:2] + (1,) * nd)
                         for t in _var_mean_from_sums(sums, x[0, 0].numel()))
        else:
            var, mean = torch.var_mean(x.to(stat_dtype), dim=spatial, keepdim=True, unbiased=False)
        scale = (var + norm.eps).rsqrt_()
        if norm.affine:
            scale = scale * norm.weight.view(shape)
        shift = -mean * scale
        if norm.affine:
            shift = shift + norm.bias.view(shape)
        return _affine_inplace(x, scale, shift)
    if isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.running_mean is not None:
        scale = (norm.running_var + norm.eps).rsqrt()
        if norm.affine:
            scale = scale * norm.weight
        shift = -norm.running_mean * scale
        if norm.affine:
            shift = shift + norm.bias
        return _affine_inplace(x, scale.view(shape), shift.view(shape))
    if isinstance(norm, nn.GroupNorm):
        n, c, g = x.shape[0], x.shape[1], norm.num_groups
        stat_dtype = torch.promote_types(x.dtype, torch.float32)
        if sums:
            grouped = [t.view(n, g, c // g).sum(2) for t in sums]
            var, mean = (t.to(stat_dtype) for t in _var_mean_from_sums(grouped, x[0, 0].numel() * (c // g)))
        else:
            var, mean = torch.var_mean(x.view(n, g, -1).to(stat_dtype), dim=2, unbiased=False)
        rstd = (var + norm.eps).rsqrt_()
        scale = rstd.repeat_interleave(c // g, dim=1)
        shift = -mean.repeat_interleave(c // g, dim=1) * scale
        if norm.affine:
            scale = scale * norm.weight
            shift = shift * norm.weight + norm.bias
        return _affine_inplace(x, scale.view((n, c) + (1,) * nd), shift.view((n, c) + (1,) * nd))
    return norm(x)


def lean_conv_norm_act(layers: nn.Sequential, parts: list[torch.Tensor]) -> torch.Tensor:
    """A ``ConvNormAct`` (conv, norm, then activation/dropout) applied to ``cat(parts, 1)``, lean."""
    sums: list[torch.Tensor] = []
    h = lean_conv(layers[0], parts, stats=sums)
    h = norm_inplace(layers[1], h, sums)
    for module in list(layers)[2:]:
        if isinstance(module, (nn.LeakyReLU, nn.ReLU)):
            h = F.leaky_relu_(h, module.negative_slope) if isinstance(module, nn.LeakyReLU) else F.relu_(h)
        else:
            h = module(h)  # PReLU (new tensor), Dropout (identity in eval)
    return h
