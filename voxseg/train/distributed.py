"""Distributed data-parallel helpers for ``torchrun --nproc_per_node N voxseg train ...``.

torchrun tells each process its rank and the world size through RANK / WORLD_SIZE / LOCAL_RANK (that
is torchrun's contract, not a voxseg setting); without them, training runs in one process.
"""
from __future__ import annotations

import os

import torch

__all__ = ["rank_and_world", "init_distributed", "barrier"]


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` under torchrun, else ``(0, 1)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else (0, 1)


def init_distributed(device: str | None = None) -> tuple[int, int]:
    """Join the process group once (NCCL on GPUs, gloo on CPU); returns ``(rank, world size)``."""
    rank, world = rank_and_world()
    if world > 1:
        import torch.distributed as dist

        use_cuda = torch.cuda.is_available() and device != "cpu"
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    return rank, world


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
