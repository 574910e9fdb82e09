"""Distributed data parallel under `torchrun`: joining the process group, one device per rank, a clean exit.

Used by the training loop (`minivid.train`), which all-reduces the gradients (DDP,
https://pytorch.org/docs/stable/notes/ddp.html) and one health flag per step, so that every rank
stops together when one sees a non-finite loss or gradient.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def ddp_context(device: torch.device | None = None) -> tuple[int, int]:
    """(rank, world_size); under torchrun, joins the process group (NCCL on GPU LOCAL_RANK, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        cuda = torch.cuda.is_available() if device is None else device.type == "cuda"
        if cuda:
            local_cuda_device()
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def local_cuda_device() -> torch.device:
    """This rank's GPU (LOCAL_RANK), made current: every rank on its own device."""
    local, n = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
    if local >= n:
        raise RuntimeError(f"LOCAL_RANK={local} but {n} GPU(s) visible: use torchrun --nproc_per_node <= {n}")
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def ddp_cleanup() -> None:
    """End a torchrun job: wait for every rank, then tear the group down (else gloo's threads, still
    running at interpreter exit, can abort a rank: "terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def sync_device(device: torch.device) -> torch.device:
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


def replica_max_difference(model: torch.nn.Module) -> float:
    """Under DDP: max abs difference of parameters across ranks (0.0 means identical)."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0.0
    flat = torch.cat([p.detach().flatten().float() for p in model.parameters()])
    flat = flat.to(sync_device(flat.device))
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    return max(float((g - flat).abs().max()) for g in gathered)


__all__ = ["ddp_context", "ddp_cleanup", "local_cuda_device", "sync_device", "replica_max_difference"]
