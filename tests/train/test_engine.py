"""The training engine on the synthetic find_pattern task: outputs, exact
resume, interruption, and settings that must fail before training."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from ats.registry import task as task_registry
from ats.train.data import EpochSampler
from ats.train.engine import Trainer


def _config(tmp_path, **overrides):
    task = task_registry.build("find_pattern")
    values = {"data.n_train": 200, "data.n_test": 60, "epochs": 2, "batch_size": 40,
              "eval_seeds": 2, "pictures": 2, "output": str(tmp_path / "run")}
    values.update(overrides)
    return task, task.config(**values)


def _trainer(tmp_path, **overrides):
    task, config = _config(tmp_path, **overrides)
    return Trainer(config, task=task, progress=False, log=lambda m: None)


def test_fit_writes_every_output(tmp_path):
    summary = _trainer(tmp_path).fit()
    run = tmp_path / "run"
    for name in ("config.json", "metrics.csv", "checkpoint.pt", "summary.json", "curves.png",
                 "pictures/epoch0001_attention.png", "pictures/epoch0002_patches.png"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert 0 <= float(rows[-1]["test_error"]) <= 1 and rows[-1]["test_error_std"] != ""
    saved = json.loads((run / "summary.json").read_text())
    assert saved["epochs"] == 2 and saved["final_test_error"] == summary["final_test_error"]
    assert json.loads((run / "config.json").read_text())["task"] == "find_pattern"
    # nothing temporary is left behind by the atomic writes
    assert not [p for p in run.rglob("*.tmp")]


def _params(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_an_interrupted_run_keeps_its_checkpoint_and_resumes(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, epochs=3)
    original = Trainer.train_epoch

    def interrupt_in_epoch_2(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", interrupt_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 1
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert len(rows) == 1

    monkeypatch.setattr(Trainer, "train_epoch", original)
    resumed = _trainer(tmp_path, epochs=3)
    resumed.fit(resume=True)
    assert resumed.epoch == 3
    assert len(list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))) == 3


def test_an_existing_run_is_not_overwritten(tmp_path):
    _trainer(tmp_path, epochs=1).fit()
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        _trainer(tmp_path, epochs=1).fit()
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        _trainer(tmp_path).fit(resume=True)


@pytest.mark.parametrize("overrides,message", [
    ({"n_patches": 300}, r"n_patches=300 is larger than the attention map \(16, 16\)"),
    ({"patch_size": 200}, r"patch_size 200 does not fit the high-resolution image \(128, 128\)"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"lr": -1.0}, "lr must be positive"),
    ({"device": "cuda:7"} if not torch.cuda.is_available() else {"device": "nonsense"},
     "device"),
])
def test_impossible_settings_fail_before_training(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        _trainer(tmp_path, **overrides)
    assert not (tmp_path / "run").exists()


def test_evaluation_does_not_change_the_training_trajectory(tmp_path):
    trainer = _trainer(tmp_path)
    state = trainer.generator.get_state()
    first = trainer.evaluate()
    assert torch.equal(trainer.generator.get_state(), state)
    assert trainer.evaluate() == first  # the same seeds each time


def test_baseline_models_train_with_the_same_engine(tmp_path):
    for model in ("cnn_low", "cnn_full"):
        summary = _trainer(tmp_path / model, model=model, epochs=1).fit()
        assert summary["model"] == model and summary["final_test_error"] is not None


def test_epoch_sampler_shards_and_reshuffles():
    a = EpochSampler(10, shuffle=True, seed=1, rank=0, world_size=2)
    b = EpochSampler(10, shuffle=True, seed=1, rank=1, world_size=2)
    a.set_epoch(3)
    b.set_epoch(3)
    assert sorted(list(a) + list(b)) == list(range(10))
    first = list(a)
    a.set_epoch(4)
    assert list(a) != first
    a.set_epoch(3)
    assert list(a) == first


def test_torchrun_with_two_ranks_trains_and_rank_0_writes(tmp_path):
    """DistributedDataParallel on the CPU (Gloo): shards, all-reduced evaluation."""
    import subprocess
    import sys

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_port=29533", "-m", "ats", "--task", "find_pattern", "--epochs", "1",
           "--set", "data.n_train=80", "--set", "data.n_test=31", "--set", "pictures=0", "--set", "eval_seeds=1",
           "--output", str(out), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count('"final_test_error"') == 1  # one summary, from rank 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 1
    # the test error counts all 31 items, summed over the shards of 16 and 15
    error = json.loads((out / "summary.json").read_text())["final_test_error"]
    assert 0 < error < 1 and abs(error * 31 - round(error * 31)) < 1e-9


def test_resuming_with_a_changed_setting_is_refused_by_the_python_api(tmp_path):
    _trainer(tmp_path, epochs=1).fit()
    with pytest.raises(ValueError, match="cannot change n_patches when resuming"):
        _trainer(tmp_path, epochs=2, n_patches=2).fit(resume=True)
    resumed = _trainer(tmp_path, epochs=2)  # epochs may change
    resumed.fit(resume=True)
    assert resumed.epoch == 2
