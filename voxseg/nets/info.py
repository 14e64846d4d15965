"""Size and cost of networks: parameter counts, FLOPs, and a comparison table of presets."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_parameters", "estimate_flops", "estimate_saved_activation_bytes", "network_table"]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of `model` (only those with `requires_grad` if `trainable_only`)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def estimate_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Forward FLOPs for one sample: 2 x multiply-accumulates of every conv, transposed conv and linear layer.

    Counted by `torch.utils.flop_counter.FlopCounterMode` on "meta" tensors, so nothing is computed or
    allocated: a 3-D network at a 128**3 patch is counted in milliseconds. Norms, activations, pooling
    and interpolation are not counted (they are a few percent of a U-Net's cost).

    Args:
        model: the network (not modified; evaluated in eval mode semantics, i.e. single output).
        input_shape: `(C, *spatial)` of one sample, without the batch axis.

    Returns:
        FLOPs (an int; 1 MAC = 2 FLOPs).
    """
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        _call_on_meta(model, input_shape, 1, training=False)
    return int(counter.get_total_flops())


def estimate_saved_activation_bytes(model: nn.Module, input_shape: Sequence[int], batch_size: int = 1) -> int:
    """Bytes of the tensors a training forward pass keeps for backward (fp32, no autocast).

    Counted exactly with ``torch.autograd.graph.saved_tensors_hooks`` while the network runs on "meta"
    tensors: nothing is computed or allocated, so a 3-D U-Net at a 128**3 patch is counted in well under
    a second. A tensor saved by several operations is counted once. This is the part of training memory
    that grows with patch and batch; the peak of a whole step is larger (gradients of activations during
    backward, outputs no operation saves): see ``voxseg.train.estimate_training_memory``.

    Args:
        model: the network (not modified; counted in training mode).
        input_shape: ``(C, *spatial)`` of one sample, without the batch axis.
        batch_size: samples per step.

    Returns:
        Bytes.
    """
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[id(t)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _call_on_meta(model, input_shape, batch_size, training=True)
    return sum(saved.values())


def _call_on_meta(model: nn.Module, input_shape: Sequence[int], batch_size: int, training: bool) -> None:
    """Run ``model`` (in training or eval mode, restored after) on a ``(batch_size, *input_shape)`` input with
    "meta" copies of its parameters and buffers: shapes flow, nothing is computed or allocated."""
    tensors = {name: torch.empty_like(t, device="meta").requires_grad_(t.requires_grad)
               for name, t in model.named_parameters()}
    tensors.update({name: torch.empty_like(t, device="meta") for name, t in model.named_buffers()})
    x = torch.empty((batch_size, *input_shape), device="meta")
    was_training = model.training
    model.train(training)
    try:
        functional_call(model, tensors, (x,), tie_weights=True, strict=False)
    finally:
        model.train(was_training)


def network_table(
    names: Iterable[str], patch: Sequence[int], in_channels: int = 1, out_channels: int = 2, **overrides
) -> str:
    """A plain-text table of presets: parameters, GFLOPs per patch, size divisor, reference.

    Args:
        names: registry names (see `voxseg.nets.NETWORKS`).
        patch: spatial patch size `(Z, Y, X)` or `(Y, X)`; its length picks 3-D or 2-D.
        in_channels: input channels.
        out_channels: output channels.
        **overrides: passed to every `build_network` call (e.g. `base_width=16`).

    Returns:
        The table, one row per name; presets not defined for the dimensionality or whose size divisor
        does not divide the patch say so instead of numbers.
    """
    from voxseg.nets.registry import NETWORKS, build_network

    dims = len(patch)
    rows = [("network", "params (M)", "GFLOPs", "divisor", "reference")]
    for name in names:
        spec = NETWORKS[name] if name in NETWORKS else None
        if spec is None:
            rows.append((name, "-", "-", "-", "unknown network"))
            continue
        ref = spec.reference.split(",")[0]
        if dims not in spec.spatial_dims:
            rows.append((name, "-", "-", "-", f"{ref} ({'/'.join(f'{d}-D' for d in spec.spatial_dims)} only)"))
            continue
        with torch.device("meta"):
            model = build_network(name, dims, in_channels, out_channels, **overrides)
        divisor = "x".join(map(str, model.size_divisor))
        params = f"{count_parameters(model) / 1e6:.2f}"
        if any(p % d for p, d in zip(patch, model.size_divisor)):
            rows.append((name, params, "patch not a multiple", divisor, ref))
            continue
        gflops = f"{estimate_flops(model, (in_channels, *patch)) / 1e9:.1f}"
        rows.append((name, params, gflops, divisor, ref))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
