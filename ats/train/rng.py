"""The random streams of a run: seeding, and saving and restoring them exactly.

A run draws from Python's, numpy's and torch's global generators (dropout,
some augmentation), from CUDA's, and from its own sampling generator (the
attention samples). A checkpoint holds all of them for every rank, so that a
resumed run, single- or multi-process, continues the same streams.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import torch

__all__ = ["capture", "restore", "seed_everything", "select_rank"]


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture(sampling: torch.Generator) -> dict[str, Any]:
    """The state of every stream of this process."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "sampling": sampling.get_state(),
    }


def restore(state: dict[str, Any], sampling: torch.Generator) -> None:
    """Put every stream of this process back to ``state`` (from :func:`capture`)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    sampling.set_state(state["sampling"])


def select_rank(saved: dict[str, Any] | list[dict[str, Any]], rank: int,
                world_size: int) -> dict[str, Any] | None:
    """This rank's states from a checkpoint's ``rng`` entry (a list, one per
    rank; a dict in single-process checkpoints of earlier versions).

    Returns None, with a warning, when the checkpoint was written by a
    different number of ranks: the streams cannot continue exactly then.
    """
    states = saved if isinstance(saved, list) else [saved]
    if len(states) == world_size:
        return states[rank]
    warnings.warn(
        f"the checkpoint holds random states of {len(states)} rank(s) but this run has "
        f"{world_size}; the random streams restart from the run's seed",
        RuntimeWarning, stacklevel=2,
    )
    return None
