"""Data-parallel training with ``torchrun``, and a no-op when run as a plain process.

``torchrun --nproc_per_node N -m <demo>`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`init_distributed` reads them and joins the process group (gloo on CPU, NCCL on CUDA). Without them
it returns a single-process :class:`DistInfo` and every helper here passes things through unchanged, so a
demo calls the same four functions either way::

    info = init_distributed(args.device)
    model = wrap_ddp(model.to(info.device), info)
    loader = DataLoader(train_set, batch_size=32, sampler=shard_sampler(train_set, info, shuffle=True, seed=0))
    history = fit(model, optimizer, train_data=loader, ...)  # fit calls sampler.set_epoch itself
    cleanup()
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

from core.lab.harness import select_device


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank (int): global rank, 0 .. world_size - 1.
        world_size (int): number of processes.
        local_rank (int): rank on this machine; picks the GPU.
        device (torch.device): the device this process trains on.
        is_main (bool): rank 0, the one that writes files and shows progress.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_main: bool


def init_distributed(device_name: str = "auto") -> DistInfo:
    """Join the ``torchrun`` process group if launched by it; otherwise describe a single process.

    Args:
        device_name (str): ``"auto"``, ``"cpu"`` or ``"cuda"``, as for
            :func:`core.lab.harness.select_device`. Under ``torchrun`` a CUDA device becomes
            ``cuda:LOCAL_RANK``. (default: ``"auto"``)
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo(rank=0, world_size=1, local_rank=0, device=select_device(device_name), is_main=True)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = select_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)  # NCCL collectives (and broadcast_object_list) use the current device
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://",
                                rank=rank, world_size=world_size)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device, is_main=rank == 0)


def wrap_ddp(model: nn.Module, info: DistInfo) -> nn.Module:
    """Move ``model`` to ``info.device`` and wrap it in ``DistributedDataParallel`` (which broadcasts
    rank 0's weights); without a process group return it unwrapped.

    Args:
        model (nn.Module): the model.
        info (DistInfo): from :func:`init_distributed`.
    """
    model = model.to(info.device)
    if not dist.is_initialized():
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def shard_sampler(dataset: Dataset, info: DistInfo, shuffle: bool = True, seed: int = 0) -> DistributedSampler:
    """A sampler that gives this rank its own ``1 / world_size`` of ``dataset`` (padded by repetition to
    equal sizes); with one process it covers the whole dataset.

    Args:
        dataset (Dataset): a map-style dataset.
        info (DistInfo): from :func:`init_distributed`.
        shuffle (bool): reshuffle every epoch (``fit`` calls ``set_epoch``). (default: ``True``)
        seed (int): the shuffle seed; must be the same on every rank. (default: ``0``)
    """
    return DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed)


def cleanup() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
