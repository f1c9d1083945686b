"""Process-group set-up for `torchrun` (PyTorch DistributedDataParallel).

`torchrun --nproc-per-node N -m contrastkit train RECIPE` sets RANK, WORLD_SIZE, LOCAL_RANK and
the rendezvous variables; `init_from_env` joins the group with NCCL on GPUs and gloo on CPUs.
Without those variables everything runs in one process and nothing here does anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from contrastkit.errors import UserError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank, world size, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UserError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def init_from_env(device: torch.device, timeout_minutes: float = 10.0) -> DistContext:
    """Join the process group described by torchrun's environment (no-op for one process).

    Backend: NCCL for CUDA devices, gloo otherwise. ``timeout_minutes`` bounds every collective,
    so a rank that dies stops the job instead of hanging it.
    """
    size = env_world_size()
    if size <= 1:
        return DistContext()
    if not dist.is_available():
        raise UserError("this PyTorch build has no torch.distributed; run with one process")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and not dist.is_nccl_available():
        raise UserError("train.device is CUDA but NCCL is not available in this PyTorch build")
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
    return DistContext(rank, size, local_rank)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
