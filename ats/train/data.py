"""Batches for the engine: a resumable shuffled order and the DataLoader.

The order of an epoch depends only on (seed, epoch, rank), so an interrupted
run resumed at epoch e sees the same order as an uninterrupted one, and with
several ranks each sees a disjoint shard.
"""

from __future__ import annotations

import random
import signal
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["EpochSampler", "make_loader"]


class EpochSampler(Sampler[int]):
    """A shuffled (or sequential) order that depends only on (seed, epoch, rank)."""

    def __init__(self, size: int, *, shuffle: bool, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, *, skip: int = 0) -> None:
        """Use epoch ``epoch``'s order, without its first ``skip`` items (of this
        rank's shard): how a run resumed within an epoch continues it."""
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        return iter(order[self.rank :: self.world_size][self.skip :])

    def __len__(self) -> int:
        return max(len(range(self.rank, self.size, self.world_size)) - self.skip, 0)


def make_loader(dataset: Dataset, sampler: Sampler, *, batch_size: int, workers: int,
                pin_memory: bool, seed: int = 0) -> DataLoader:
    """A DataLoader that keeps every item (no ``drop_last``) in ``sampler``'s order.

    The workers' base seed comes from ``seed`` through the loader's own
    generator, so that starting an iterator draws nothing from the global
    torch stream (a run resumed within an epoch then continues that stream
    exactly as an uninterrupted one).
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(seed),
        drop_last=False,
    )


def _seed_worker(worker_id: int) -> None:
    # Each worker's numpy/random seed follows torch's per-worker seed.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    # Ctrl-C, `timeout`, SLURM and container stops signal the whole process
    # group. The main process stops the run at the end of its step and saves
    # (ats.train.stopping); a worker killed meanwhile would make the loader
    # raise in the middle of that step instead. Workers leave both signals
    # to the main process, which shuts them down when the run ends (and a
    # worker whose parent is gone exits by itself).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
