"""Memory a training run needs, what this machine can give it, and a patch and batch that fit.

The estimate of one training step is counted, not guessed: the tensors the network keeps for backward
at the planned patch and batch (:func:`voxseg.nets.estimate_saved_activation_bytes`, on "meta"
tensors), times :data:`TRAINING_PEAK_FACTOR` for what backward adds on top, plus weights, gradients and
optimiser state, plus the framework itself. ``python benchmarks/memory_plan.py`` measures the peak of
real training steps against it.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from voxseg.nets import count_parameters, estimate_saved_activation_bytes, shrink_longest_axis
from voxseg.train.optim import OPTIMIZERS

__all__ = ["MemoryEstimate", "TRAINING_PEAK_FACTOR", "FRAMEWORK_BYTES", "estimate_training_memory",
           "available_memory", "fit_patch_to_memory"]

TRAINING_PEAK_FACTOR = 1.6
"""Peak memory of a training step divided by the activations autograd saves: the step also holds gradients,
optimiser state and the library's temporary copies. The factor is chosen for 3-D U-Nets of base width 16 and
32; narrower networks (base width 4-8) peak higher relative to their activations, so the estimate is low for
them. Estimate against measured peak: ``benchmarks/memory_plan.py`` and docs/benchmarks.md."""

FRAMEWORK_BYTES = int(0.45 * 2**30)
"""Resident memory of a CPU process with torch and voxseg loaded, before training starts (bytes; an upper
bound, added to every estimate)."""

GIB = 2**30


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one training process needs at its peak.

    Attributes:
        activations: saved activations x :data:`TRAINING_PEAK_FACTOR` (grows with patch and batch).
        parameters: weights, their gradients and the optimiser's state.
        framework: torch and voxseg themselves (CPU processes; 0 on a GPU, whose memory they do not use).
    """

    activations: int
    parameters: int
    framework: int

    @property
    def total(self) -> int:
        return self.activations + self.parameters + self.framework

    def __str__(self) -> str:
        return f"{self.total / GIB:.1f} GiB"


def estimate_training_memory(model: nn.Module, input_shape: Sequence[int], batch_size: int,
                             optimizer: str = "sgd", device_type: str = "cpu") -> MemoryEstimate:
    """Peak memory of one fp32 training step (bf16 autocast needs less).

    Args:
        model: the network (not modified).
        input_shape: ``(C, *spatial)`` of one sample, voxels.
        batch_size: samples per step.
        optimizer: optimiser name (its state is 1-3 copies of the weights).
        device_type: ``"cpu"`` or ``"cuda"``.
    """
    saved = estimate_saved_activation_bytes(model, input_shape, batch_size)
    weights = 4 * count_parameters(model)
    copies = 2 + (OPTIMIZERS[optimizer].state_copies if optimizer in OPTIMIZERS else 2)  # + weights, gradients
    return MemoryEstimate(int(saved * TRAINING_PEAK_FACTOR), weights * copies,
                          FRAMEWORK_BYTES if device_type == "cpu" else 0)


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup memory limit (Docker, SLURM, Kubernetes), None without one."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):  # cgroup v1
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or int(limit) >= 2**60:  # no limit set
            return None
        return max(0, int(limit) - usage)
    return None


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes this process can still take: on a CPU the smaller of ``MemAvailable`` (RAM not needed by others,
    page cache included) and the room under a cgroup limit (a container or batch job); the free memory of
    the GPU on CUDA; ``None`` when the system does not say."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    free = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except OSError:
        pass
    if free is None:
        try:
            free = int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    room = _cgroup_room()
    return free if room is None else min(free, room)


def fit_patch_to_memory(model: nn.Module, in_channels: int, patch: Sequence[int], batch_size: int, budget: int,
                        divisor: Sequence[int], optimizer: str = "sgd", device_type: str = "cpu",
                        min_side: int = 32) -> tuple[list[int], int, MemoryEstimate]:
    """A patch and batch whose step fits ``budget``, shrunk greedily from ``patch`` and ``batch_size``.

    The longest axis shrinks first, one ``divisor`` step at a time, down to ``min_side`` voxels (or the
    divisor when larger); then the batch shrinks to 1, as a larger patch gives the network more context
    than a second sample does.

    Args:
        model: the network.
        in_channels: network input channels.
        patch: ``[pz, py, px]``; ``[1, py, px]`` for a 2-D network.
        batch_size: starting batch.
        budget: bytes.
        divisor: the network's size divisor per spatial axis.
        optimizer / device_type: as in :func:`estimate_training_memory`.
        min_side: smallest side a shrunk axis may reach.

    Returns:
        ``(patch, batch_size, estimate)``.

    Raises:
        ValueError: even the smallest patch with batch 1 does not fit; says how much it needs.
    """
    two_d = len(divisor) == 2
    spatial = list(patch[1:] if two_d else patch)
    divisor = list(divisor)

    def estimate(side: list[int], batch: int) -> MemoryEstimate:
        return estimate_training_memory(model, (in_channels, *side), batch, optimizer, device_type)

    def full(side: list[int]) -> list[int]:
        return [1, *side] if two_d else side

    floor = [max(d, (min_side // d) * d) for d in divisor]
    current = estimate(spatial, batch_size)
    while current.total > budget:
        if not shrink_longest_axis(spatial, divisor, floor):
            if batch_size == 1:
                raise ValueError(f"training needs about {current} even at patch {full(spatial)} and batch 1, more "
                                 f"than the {budget / GIB:.1f} GiB available: use a narrower network "
                                 f"(--net-args base_width=8) or give more memory (--memory)")
            batch_size -= 1
        current = estimate(spatial, batch_size)
    return full(spatial), batch_size, current
