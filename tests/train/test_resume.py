"""An interrupted and resumed run ends exactly where an uninterrupted one does,
also when the run draws from every random stream: dropout (torch's global
generator), augmentation seeded per item and epoch, augmentation drawing from
numpy's and Python's global generators, DataLoader workers, and a stop
within an epoch (docs/training.md, "Resuming")."""

from __future__ import annotations

import random

import numpy as np
import pytest
from torch import nn
from torch.utils.data import Dataset

from ats.train.engine import Trainer
from tasks.find_pattern.task import FindPattern
from tests.train.helpers import assert_same_weights, make_trainer


class Augmented(Dataset):
    """find_pattern items, augmented: a horizontal flip drawn from a generator
    seeded by (seed, epoch, index) (:class:`~ats.contracts.EpochAware`), and,
    with ``global_draws``, a jitter of ``x_low`` drawn from numpy's and
    Python's global generators (the worker's, with DataLoader workers)."""

    def __init__(self, base: Dataset, *, seed: int, global_draws: bool) -> None:
        self.base, self.seed, self.global_draws, self.epoch = base, seed, global_draws, 0

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict:
        item = dict(self.base[i])
        if np.random.default_rng((self.seed, self.epoch, i)).random() < 0.5:
            item["x_low"] = item["x_low"].flip(-1)
            item["x_high"] = item["x_high"].flip(-1)
        if self.global_draws:
            jitter = (np.random.random() - 0.5) * 0.02 + (random.random() - 0.5) * 0.02
            item["x_low"] = item["x_low"] + jitter
        return item


class DropoutAugmented(FindPattern):
    """find_pattern with dropout before the classifier and an augmented
    training set (an unregistered variant: same name, same configuration)."""

    def __init__(self, *, global_draws: bool) -> None:
        self.global_draws = global_draws

    def datasets(self, config):
        train, test = super().datasets(config)
        return Augmented(train, seed=config.seed, global_draws=self.global_draws), test

    def build_model(self, config):
        model = super().build_model(config)
        model.head = nn.Sequential(nn.Dropout(0.5), model.head)
        return model


def _stop_after(monkeypatch, epoch: int, step: int) -> None:
    """Ask the run to stop (as Ctrl-C does) once it has finished ``step`` of ``epoch``."""
    original = Trainer.train_step

    def train_step(self, batch):
        result = original(self, batch)
        if self.partial is not None:  # the step before this one
            done = (self.partial["epoch"], self.partial["step"] + 1)
        else:
            done = (self.epoch + 1, 1)
        if done == (epoch, step):
            self.stop.requested = "SIGINT"
        return result

    monkeypatch.setattr(Trainer, "train_step", train_step)


@pytest.mark.parametrize("workers,stop,global_draws", [
    (0, "epoch", True),
    (0, "step", True),
    (2, "epoch", True),
    # Worker seeds depend on the step a loader starts at, so draws from a
    # worker's global generators cannot continue mid-epoch; per-item ones do.
    (2, "step", False),
], ids=["in-process-at-an-epoch-end", "in-process-mid-epoch", "workers-at-an-epoch-end",
        "workers-mid-epoch"])
def test_a_resumed_run_with_dropout_workers_and_augmentation_continues_exactly(
        tmp_path, monkeypatch, workers, stop, global_draws):
    settings = {"data.n_train": 80, "data.n_test": 20, "epochs": 2, "workers": workers}

    def trainer(out, **overrides):
        return make_trainer(out, task=DropoutAugmented(global_draws=global_draws),
                            **{**settings, **overrides})

    straight = trainer(tmp_path / "straight")
    straight.fit()

    if stop == "epoch":
        trainer(tmp_path / "resumed", epochs=1).fit()
    else:
        with monkeypatch.context() as m:
            _stop_after(m, epoch=2, step=2)
            with pytest.raises(KeyboardInterrupt):
                trainer(tmp_path / "resumed").fit()
    resumed = trainer(tmp_path / "resumed")
    resumed.fit(resume=True)
    if stop == "step":
        assert resumed.history[0]["epoch"] == 1  # epoch 1 came from the checkpoint

    assert_same_weights(straight, resumed)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    assert [h["test_error"] for h in resumed.history] == [h["test_error"] for h in straight.history]
