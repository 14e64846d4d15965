"""Distributed data-parallel helpers for ``torchrun --nproc_per_node N voxseg train ...``.

torchrun tells each process its rank and the world size through RANK / WORLD_SIZE / LOCAL_RANK (that
is torchrun's contract, not a voxseg setting); without them, training runs in one process.
"""
from __future__ import annotations

import os

import torch

__all__ = ["rank_and_world", "init_distributed", "barrier", "on_any_rank", "rank0_flag", "rank0_object"]


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


def on_any_rank(local: bool, world: int, device: torch.device) -> bool:
    """True on every rank when ``local`` is true on any (one all-reduce under DDP; ``local`` itself when ``world``
    is 1)."""
    if world == 1:
        return local
    flag = torch.tensor([1.0 if local else 0.0], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())


def rank0_flag(local: bool, world: int, device: torch.device) -> bool:
    """Rank 0's ``local`` on every rank (e.g. its clock decides when a time budget is spent, so every rank stops
    at the same iteration)."""
    if world == 1:
        return local
    flag = torch.tensor([1.0 if local else 0.0], device=device)
    torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


def rank0_object(value, world: int):
    """Rank 0's ``value`` (any picklable object) on every rank (e.g. why training stopped: rank 0 alone
    validates, so it alone decides early stopping)."""
    if world == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
