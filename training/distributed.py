"""Training under torchrun: which process this is, the process group, and means over all
processes. Without torchrun every function here is the one-process case."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from utils import resolve_device


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, the number of processes): (0, 1) without torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_mean(total: torch.Tensor, count: int) -> float:
    """total / count summed over all processes (just the local ratio without torchrun)."""
    if rank_and_world()[1] > 1:
        both = torch.stack([total.double(), torch.tensor(float(count), device=total.device, dtype=torch.float64)])
        dist.all_reduce(both)
        total, count = both[0], both[1].item()
    return total.item() / max(count, 1)


def setup_distributed(device_name: str) -> torch.device:
    """Under torchrun (WORLD_SIZE > 1) join the process group, NCCL on GPUs and gloo on
    CPUs, and give each process its own GPU; otherwise just resolve the device."""
    device = resolve_device(device_name)
    if int(os.environ.get("WORLD_SIZE", 1)) == 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device
