"""k-fold cross-validation (ats/train/crossval.py): a finished fold is kept,
an interrupted one resumed exactly, and the summary is over every fold."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from torch.utils.data import Subset

from ats.config import setting
from ats.train.crossval import cross_validate
from ats.train.engine import Trainer
from tasks.find_pattern import FindPatternDataset
from tasks.find_pattern.task import FindPattern, FindPatternOptions


@dataclasses.dataclass(frozen=True)
class FoldOptions(FindPatternOptions):
    k: int = setting(2, ge=2, doc="folds")
    fold: int = setting(0, ge=0, doc="the held-out fold")

    def validate(self) -> None:
        if self.fold >= self.k:
            raise ValueError(f"data.fold must be < data.k, got {self.fold} and {self.k}")


class FoldedPattern(FindPattern):
    """find_pattern as a k-fold task: item i is in fold i % k."""

    options = FoldOptions
    folds_key = "fold"

    def datasets(self, config):
        o = self.options_of(config)
        items = FindPatternDataset(o.n_train, seed=o.seed)
        held_out = [i for i in range(o.n_train) if i % o.k == o.fold]
        kept = [i for i in range(o.n_train) if i % o.k != o.fold]
        return Subset(items, kept), Subset(items, held_out)


def _config(task, out, **overrides):
    values = {"data.n_train": 60, "data.k": 2, "epochs": 2, "batch_size": 10, "eval_seeds": 1,
              "pictures": 0, "output": str(out), **overrides}
    return task.config(**values)


def _fits(monkeypatch):
    """Record (fold directory, resume) of every Trainer.fit."""
    calls = []
    original = Trainer.fit

    def fit(self, *, resume=False):
        calls.append((self.output.name, resume))
        return original(self, resume=resume)

    monkeypatch.setattr(Trainer, "fit", fit)
    return calls


def test_an_interrupted_fold_is_resumed_exactly_and_finished_ones_are_kept(tmp_path, monkeypatch):
    task = FoldedPattern()
    straight = cross_validate(_config(task, tmp_path / "a"), task, progress=False,
                              log=lambda m: None)
    assert straight["k"] == 2 and len(straight["fold_test_errors"]) == 2

    out = tmp_path / "b"
    original = Trainer.train_step

    def interrupt_fold_1_in_epoch_2(self, batch):
        if self.output.name == "fold1" and self.epoch == 1 and self.partial is not None:
            raise KeyboardInterrupt  # a hard stop in epoch 2, step 2 of fold 1
        return original(self, batch)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "train_step", interrupt_fold_1_in_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            cross_validate(_config(task, out), task, progress=False, log=lambda m: None)
    assert (out / "fold0" / "summary.json").is_file()
    assert not (out / "fold1" / "summary.json").exists()
    kept = {name: (out / "fold0" / name).read_bytes() for name in ("summary.json", "checkpoint.pt")}

    calls = _fits(monkeypatch)
    result = cross_validate(_config(task, out), task, progress=False, log=lambda m: None)
    assert calls == [("fold1", True)]  # fold 0 is finished: kept, not trained again
    assert {n: (out / "fold0" / n).read_bytes() for n in kept} == kept
    assert result["fold_test_errors"] == straight["fold_test_errors"]  # fold 1 exactly as before
    fold1 = json.loads((out / "fold1" / "summary.json").read_text())
    assert fold1["epochs"] == 2
    errors = np.array(result["fold_test_errors"])
    assert result["mean_test_error"] == pytest.approx(errors.mean())
    assert result["std_test_error"] == pytest.approx(errors.std(ddof=1))
    assert json.loads((out / "cross_validation.json").read_text())["fold_test_errors"] == \
        result["fold_test_errors"]

    # more epochs: every fold continues from its checkpoint
    calls.clear()
    longer = cross_validate(_config(task, out, epochs=3), task, progress=False, log=lambda m: None)
    assert calls == [("fold0", True), ("fold1", True)]
    assert all(json.loads((out / f"fold{i}" / "summary.json").read_text())["epochs"] == 3
               for i in range(2))
    assert len(longer["fold_test_errors"]) == 2


def test_cross_validation_needs_folds_and_an_output(tmp_path):
    task = FoldedPattern()
    with pytest.raises(ValueError, match="needs an output directory"):
        cross_validate(task.override(_config(task, tmp_path), {"output": None}), task)
    plain = FindPattern()
    with pytest.raises(ValueError, match="task 'find_pattern' has no folds to cross-validate"):
        cross_validate(plain.config(output=str(tmp_path)), plain)
