"""The random streams of a run: seeding, and saving and restoring them exactly.

A run draws from Python's, numpy's and torch's global generators (dropout,
some augmentation), from CUDA's, and from its own sampling generator (the
attention samples). A checkpoint holds all of them for every rank, so that a
resumed run, single- or multi-process, continues the same streams.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["STREAMS", "Stream", "capture", "restore", "seed_everything", "select_rank"]


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Stream:
    """One global random stream: how to read and set its state, and whether
    this process has it (CUDA's only where a CUDA device is)."""

    name: str  #: its key in a checkpoint's ``rng`` entry
    get: Callable[[], Any]
    set: Callable[[Any], None]
    available: Callable[[], bool] = lambda: True


#: the process-wide streams a checkpoint holds, besides the run's sampling
#: generator; :func:`capture` and :func:`restore` treat them all alike
STREAMS: list[Stream] = [
    Stream("python", random.getstate, random.setstate),
    Stream("numpy", np.random.get_state, np.random.set_state),
    Stream("torch", torch.get_rng_state, torch.set_rng_state),
    Stream("cuda", lambda: torch.cuda.get_rng_state_all(),
           lambda state: torch.cuda.set_rng_state_all(state),
           available=lambda: torch.cuda.is_available()),
]


def capture(sampling: torch.Generator) -> dict[str, Any]:
    """The state of every stream of this process (None for a stream this
    process does not have) and of the sampling generator."""
    state = {s.name: s.get() if s.available() else None for s in STREAMS}
    state["sampling"] = sampling.get_state()
    return state


def restore(state: dict[str, Any], sampling: torch.Generator) -> None:
    """Put every stream of this process back to ``state`` (from :func:`capture`).

    A stream missing from ``state`` (saved as None, e.g. CUDA's by a run on
    the CPU) or that this process does not have is left as it is; so is the
    sampling generator, with a warning, when its state was saved on another
    device type (a run moved from the CPU to a GPU or back).
    """
    for s in STREAMS:
        if state.get(s.name) is not None and s.available():
            s.set(state[s.name])
    saved, size = state["sampling"], sampling.get_state().numel()
    # A CPU generator's state (Mersenne Twister, 5056 bytes) does not fit a
    # CUDA one (Philox, 16 bytes): a run started on one device type and
    # resumed on the other keeps its weights but not its sampling stream.
    if saved.numel() != size:
        warnings.warn(
            f"the checkpoint's sampling generator was saved on another device type "
            f"({saved.numel()} state bytes, this run's {sampling.device} generator has "
            f"{size}); sampling continues from the run's seed",
            RuntimeWarning, stacklevel=2,
        )
        return
    sampling.set_state(saved)


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
