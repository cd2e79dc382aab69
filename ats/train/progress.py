"""What a person watching a run sees: progress bars and time estimates."""

from __future__ import annotations

import statistics
import sys
from typing import Any, Callable

from ats.train.metrics import format_duration

__all__ = ["EpochProgress", "run_estimate"]


class EpochProgress:
    """The progress bar of one training epoch (nothing when ``enabled`` is
    False): loss, accuracy and samples per second."""

    def __init__(self, total: int, initial: int, desc: str, *, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, leave=False,
                            dynamic_ncols=True,
                            mininterval=0.5 if sys.stderr.isatty() else 10.0)

    def update(self, totals: dict[str, Any], rate: float) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{totals['loss'] / totals['count']:.4f}",
                             acc=f"{1 - totals['errors'] / totals['count']:.3f}",
                             samples_s=f"{rate:.1f}", refresh=False)

    def close(self) -> None:
        """Remove the bar, so that what is printed next starts on its own line."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_estimate(step_seconds: list[float], *, steps_per_epoch: int, epochs_left: int,
                 eval_seconds: float, eval_every: int, log: Callable[[str], None]) -> None:
    """Print the time of one epoch and of the whole run (training and evaluation).

    ``step_seconds``: the first steps' times; the first is left out (one-off
    warm-up costs). ``eval_seconds``: one evaluation's estimated time.
    """
    typical = statistics.median(step_seconds[1:] or step_seconds)
    train = typical * steps_per_epoch
    evaluations = -(-epochs_left // eval_every)
    total = train * epochs_left + eval_seconds * evaluations
    log(f"estimated time: {format_duration(train)} of training per epoch "
        f"({steps_per_epoch} steps of {typical:.2f} s) + {format_duration(eval_seconds)} per "
        f"evaluation; the {epochs_left} epoch(s) to go: about {format_duration(total)}")
