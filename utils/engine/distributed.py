"""DistributedDataParallel under torchrun: process group set-up and the model wrapper.

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK for every process; a plain `python train.py`
sets none of them and runs as rank 0 of a world of 1, with nothing initialised.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn as nn


def rank_and_world() -> tuple[int, int]:
    """(rank of this process, number of processes); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def setup_distributed(device: str) -> tuple[int, int, str]:
    """Initialise torch.distributed under torchrun (NCCL on GPUs, gloo on the CPU).

    Returns (rank, world size, device); on CUDA every process gets its own GPU,
    `cuda:LOCAL_RANK`."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world > 1 and not dist.is_initialized():
        backend = 'nccl' if device.startswith('cuda') else 'gloo'
        dist.init_process_group(backend)
        if device.startswith('cuda'):
            local = int(os.environ.get('LOCAL_RANK', '0'))
            torch.cuda.set_device(local)
            device = f'cuda:{local}'
    rank, world = rank_and_world()
    return rank, world, device


def wrap_for_world(module: nn.Module, device: torch.device, world: int) -> nn.Module:
    """`module` itself in a single process; wrapped in DistributedDataParallel (which averages
    the gradients over the processes in `backward`) when there are several."""
    if world <= 1:
        return module
    return nn.parallel.DistributedDataParallel(
        module, device_ids=[device.index] if device.type == 'cuda' else None)
