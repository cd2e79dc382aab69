"""Small find_pattern runs for the engine tests, and a record of which items a
model saw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ats.registry import task as task_registry
from ats.task import Task
from ats.train.engine import Trainer

#: a run of a few seconds: 6 steps of 20 items per epoch, 40 test items
TINY: dict[str, Any] = {"data.n_train": 120, "data.n_test": 40, "epochs": 2, "batch_size": 20,
                        "eval_seeds": 1, "pictures": 0}


def make_trainer(out: str | Path | None = None, *, task: Task | None = None,
                 datasets: tuple[Dataset, Dataset] | None = None, log=None,
                 **overrides: Any) -> Trainer:
    """A find_pattern Trainer (``task``: a variant of it) writing to ``out``
    (None: no files), with :data:`TINY` and ``overrides``."""
    task = task if task is not None else task_registry.build("find_pattern")
    values = {**TINY, "output": None if out is None else str(out), **overrides}
    return Trainer(task.config(**values), task=task, datasets=datasets, progress=False,
                   log=log or (lambda message: None))


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.classifier.state_dict().items()}


def assert_same_weights(a: Trainer, b: Trainer) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=0, atol=0, msg=key)


class SeenItems:
    """Which items of ``dataset`` each forward pass of ``trainer``'s model saw
    (found by their ``x_low``, unique per item), and how it was called.

    Attributes:
        batches: one list of item indices per forward pass.
        deterministic: the ``deterministic`` argument of each pass.
        training: whether the model was in training mode, per pass.
    """

    def __init__(self, trainer: Trainer, dataset: Dataset) -> None:
        self.index = {self._key(dataset[i]["x_low"]): i for i in range(len(dataset))}
        assert len(self.index) == len(dataset), "items must differ in x_low"
        self.batches: list[list[int]] = []
        self.deterministic: list[bool] = []
        self.training: list[bool] = []
        self._handle = trainer.classifier.register_forward_pre_hook(self._hook, with_kwargs=True)

    @staticmethod
    def _key(x_low: torch.Tensor) -> bytes:
        return x_low.detach().cpu().contiguous().numpy().tobytes()

    def _hook(self, module, args, kwargs) -> None:
        self.batches.append([self.index.get(self._key(row), -1) for row in args[0]])
        self.deterministic.append(bool(kwargs.get("deterministic", False)))
        self.training.append(module.training)

    def clear(self) -> None:
        self.batches.clear()
        self.deterministic.clear()
        self.training.clear()

    def remove(self) -> None:
        self._handle.remove()
