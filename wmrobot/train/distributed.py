"""Several training processes under ``torchrun``: the process group, DDP and the rank's device."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from wmrobot.errors import ConfigError


def init_distributed(device: torch.device | None = None) -> tuple[int, int]:
    """(rank, world size); joins the process group when started by ``torchrun``, or a
    launcher that sets the same variables: NCCL when training on CUDA ``device``, else gloo
    (a CPU run on a GPU host must not get NCCL, which cannot move CPU tensors)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        on_cuda = device is not None and device.type == "cuda"
        dist.init_process_group("nccl" if on_cuda else "gloo")
    return dist.get_rank(), world


def train_device(setting: str) -> torch.device:
    """The device to train on: ``auto`` (CUDA when there is one), ``cpu`` or ``cuda``; with
    several processes on CUDA, each takes its own GPU (``LOCAL_RANK``)."""
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(setting)
    except RuntimeError:
        raise ConfigError(
            f"model.train.device={setting!r} is not a device; use auto, cpu or cuda"
        ) from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"model.train.device={setting!r}: wmrobot trains on auto, cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"model.train.device={setting}: CUDA is not available here; use "
            f"model.train.device=cpu, or auto (CUDA when there is one)"
        )
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    return device


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` wrapped in DDP when several processes train, else ``module`` itself.

    DDP averages the gradients of ``module``'s parameters over the ranks during backward
    (call it once per backward)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return module
    return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)


def ranks_agree(model: nn.Module) -> bool:
    """Whether every rank holds the same weights (True in one process)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return True
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    first = flat.clone()
    dist.broadcast(first, src=0)
    same = torch.tensor(float(torch.equal(flat, first)), device=flat.device)
    dist.all_reduce(same, op=dist.ReduceOp.MIN)
    return bool(same.item())
