"""Training on smaller canvases first (docs/tasks/mega_mnist.md, "Learning from the start").

On the paper's 1500x1500 canvas a patch sampled from a uniform attention
map lands on one of the five digits about once in a hundred draws, so neither
network has anything to learn from for many epochs. On a smaller canvas
with the same digits, the same noise density and the same low-view scale the
same networks see digits in a large share of their patches; both are
convolutional, so what they learn there holds on the full canvas. The test
set is never changed.
"""

from __future__ import annotations

from typing import Sequence

from torch.utils.data import Dataset

__all__ = ["CanvasCurriculum", "stage_size"]


def stage_size(schedule: Sequence[int], epoch: int, full: int) -> int:
    """The canvas side of epoch ``epoch`` (1-based): ``schedule[epoch - 1]``,
    then ``full`` once the schedule is over."""
    return schedule[epoch - 1] if 1 <= epoch <= len(schedule) else full


class CanvasCurriculum(Dataset):
    """A training set whose canvas grows with the epochs.

    Args:
        stages: canvas side -> the data set of that side (the full one included).
        schedule: one canvas side per early epoch; later epochs use ``full``.
        full: the side of the task's canvas.

    Items are those of the current stage (:meth:`set_epoch`; the first
    stage until it is called). All stages have the same length.
    """

    def __init__(self, stages: dict[int, Dataset], schedule: Sequence[int], full: int) -> None:
        missing = sorted({*schedule, full} - set(stages))
        if missing:
            raise ValueError(f"no data set for the canvas side(s) {missing}")
        lengths = {len(d) for d in stages.values()}
        if len(lengths) != 1:
            raise ValueError(f"every stage must have the same length, got {sorted(lengths)}")
        self.stages, self.schedule, self.full = stages, tuple(schedule), full
        self.current = stages[stage_size(self.schedule, 1, full)]

    def set_epoch(self, epoch: int) -> None:
        self.current = self.stages[stage_size(self.schedule, epoch, self.full)]

    def __len__(self) -> int:
        return len(self.current)

    def __getitem__(self, i: int):
        return self.current[i]

    def __repr__(self) -> str:
        return f"CanvasCurriculum(schedule={self.schedule}, then {self.full}: {self.current!r})"
