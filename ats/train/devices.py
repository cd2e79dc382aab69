"""Where a run computes: the device, and the process group under ``torchrun``.

One process by default; under ``torchrun`` (``WORLD_SIZE`` > 1) every rank
joins a process group (NCCL on CUDA, Gloo on the CPU), takes the GPU of its
``LOCAL_RANK``, trains on its own shard, and only rank 0 writes files.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

__all__ = [
    "all_gather_objects",
    "all_reduce_sum",
    "init_distributed",
    "memory_format",
    "rank_and_world_size",
    "resolve_device",
    "unwrap",
]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given.

    Raises:
        ValueError: not a torch device, or CUDA asked for but not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device {name!r} is not a valid torch device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available here")
    return device


def memory_format(name: str, device: torch.device) -> torch.memory_format:
    """The layout of the networks' 4-d weights (and so of their activations).

    ``"auto"`` is channels-last on the CPU, where oneDNN's convolutions are
    fastest in it (about 1.5x on the paper's Megapixel MNIST step,
    docs/training.md), and contiguous elsewhere (cuDNN's choice depends on the
    GPU and precision; unmeasured here).
    """
    if name == "auto":
        name = "channels_last" if device.type == "cpu" else "contiguous"
    formats = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
    if name not in formats:
        raise ValueError(f"memory_format must be auto, channels_last or contiguous, got {name!r}")
    return formats[name]


def rank_and_world_size() -> tuple[int, int]:
    """This process's rank and the number of processes (``torchrun``'s variables)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_distributed(device: torch.device, world_size: int) -> torch.device:
    """Join the process group when ``world_size`` > 1; returns this rank's device."""
    if world_size <= 1:
        return device
    import torch.distributed as dist

    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def leave_distributed(*, wait_for_others: bool) -> None:
    """Leave the process group, if this process joined one.

    Without it, a rank that finishes first exits with Gloo's threads still
    running and the C++ runtime aborts it ("terminate called without an
    active exception"), which torchrun reports as a failed run.
    ``wait_for_others`` meets the other ranks first (the run ended normally);
    after an error it is False, since the others may never arrive.
    """
    if not _distributed():
        return
    if wait_for_others:
        torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def all_reduce_sum(device: torch.device, *values: float) -> tuple[float, ...]:
    """``values`` summed over all ranks (unchanged in a single process)."""
    if not _distributed():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return tuple(t.tolist())


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (``[value]`` in a single process)."""
    if not _distributed():
        return [value]
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model)."""
    return getattr(model, "module", model)
