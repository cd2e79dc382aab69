"""Runs never lose work: the run directory resumed is the one named, settings
are checked before anything is written, one process per run directory,
damaged checkpoints are caught, OS errors are one clear line, and a run
stopped within an epoch continues exactly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from ats.cli import run_main
from ats.registry import task as task_registry
from ats.train import checkpoint as ckpt
from ats.train.checkpoint import CheckpointError, load_checkpoint, previous_path
from ats.train.engine import Trainer
from ats.train.lock import RunDirectoryInUse, RunLock

TINY = ["--set", "data.n_train=120", "--set", "data.n_test=40", "--set", "eval_seeds=1",
        "--set", "pictures=0", "--no-progress"]


def _run(args, **kwargs):
    return CliRunner().invoke(run_main, args, **kwargs)


def _trainer(out, **overrides):
    task = task_registry.build("find_pattern")
    values = {"data.n_train": 120, "data.n_test": 40, "epochs": 2, "batch_size": 20,
              "eval_seeds": 1, "pictures": 0, "output": str(out)}
    values.update(overrides)
    return Trainer(task.config(**values), task=task, progress=False, log=lambda m: None)


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.classifier.state_dict().items()}


# -- 1. --output is the run to resume ---------------------------------------------------


def test_resume_continues_the_directory_given_not_the_one_saved(tmp_path):
    a, b = tmp_path / "runA", tmp_path / "runB"
    assert _run(["--task", "find_pattern", "--epochs", "1", "--output", str(a), *TINY]
                ).exit_code == 0
    shutil.copytree(a, b)
    before = (a / "checkpoint.pt").read_bytes()
    result = _run(["--task", "find_pattern", "--epochs", "2", "--output", str(b), "--resume",
                   "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"resumed from {b / 'checkpoint.pt'}" in result.stderr
    assert load_checkpoint(b / "checkpoint.pt")["epoch"] == 2
    assert json.loads((b / "config.json").read_text())["output"] == str(b)
    assert (a / "checkpoint.pt").read_bytes() == before  # runA untouched


def test_a_run_saved_with_a_relative_output_resumes_from_anywhere(tmp_path, monkeypatch):
    (tmp_path / "first").mkdir()
    monkeypatch.chdir(tmp_path / "first")
    assert _run(["--task", "find_pattern", "--epochs", "1", "--output", "runs/x", *TINY]
                ).exit_code == 0
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "first" / "runs" / "x"
    result = _run(["--task", "find_pattern", "--epochs", "2", "--output", str(run), "--resume",
                   "--no-progress"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 2


# -- 2. every value checked before anything is written --------------------------------------


@pytest.mark.parametrize("setting,message", [
    ("lr=abc", "lr expects a number, got 'abc'"),
    ("lr=none", "lr expects a number, got 'none'"),
    ("lr=True", "lr expects a number, got 'True'"),
    ("smoothing=abc", "smoothing expects a number"),
    ("clip_norm=abc", "clip_norm expects a number or none"),
    ("adam_eps=abc", "adam_eps expects a number"),
    ("weight_decay=abc", "weight_decay expects a number"),
    ("entropy=abc", "entropy expects a number"),
    ("lr_decay=abc", "lr_decay expects a number"),
    ("momentum=abc", "momentum expects a number"),
    ("data.noise=maybe", "data.noise expects a number, got 'maybe'"),
])
def test_bad_values_stop_the_run_before_anything_is_written(tmp_path, monkeypatch, setting,
                                                            message):
    monkeypatch.chdir(tmp_path)
    result = _run(["--task", "find_pattern", "--set", setting, "--no-progress"])
    assert result.exit_code == 1 and message in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "runs").exists()


# -- 3. one process per run directory -------------------------------------------------------


def test_a_second_process_on_a_run_directory_in_use_is_refused(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from ats.train.lock import RunLock; "
         f"RunLock({str(out)!r}).acquire(); print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = _run(["--task", "find_pattern", "--epochs", "1", "--output", str(out), *TINY])
        assert result.exit_code == 1
        assert f"{out} is in use by another run (process {holder.pid} on" in result.output
        assert not (out / "checkpoint.pt").exists()
    finally:
        holder.communicate("", timeout=60)
    # the holder is gone: the lock went with it
    assert _run(["--task", "find_pattern", "--epochs", "1", "--output", str(out), *TINY]
                ).exit_code == 0


def test_the_lock_is_held_while_training_and_released_after(tmp_path):
    out = tmp_path / "run"
    with RunLock(out):
        with pytest.raises(RunDirectoryInUse, match=f"process {os.getpid()} on"):
            _trainer(out).fit()
    _trainer(out, epochs=1).fit()
    with RunLock(out) as lock:  # free again
        assert lock.held


# -- 4. damaged checkpoints ----------------------------------------------------------------


def _damage(path, at=0.5):
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_checkpoint_damaged_mid_file_is_detected(tmp_path):
    path = tmp_path / "c.pt"
    ckpt.save_checkpoint(path, {"w": torch.randn(300, 300), "epoch": 1})
    _damage(path)
    with pytest.raises(CheckpointError, match=r"c\.pt is damaged: its record .* CRC-32"):
        load_checkpoint(path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        load_checkpoint(path)


def test_resume_falls_back_to_the_previous_checkpoint_when_the_last_is_damaged(tmp_path):
    out = tmp_path / "run"
    _trainer(out, epochs=2).fit()
    assert load_checkpoint(previous_path(out / "checkpoint.pt"))["epoch"] == 1
    _damage(out / "checkpoint.pt")
    resumed = _trainer(out, epochs=3)
    with pytest.warns(RuntimeWarning, match="is damaged.*using the previous checkpoint"):
        resumed.fit(resume=True)
    assert resumed.epoch == 3 and len(resumed.history) == 3
    # both damaged: a clear error, not a crash later
    _damage(out / "checkpoint.pt")
    _damage(previous_path(out / "checkpoint.pt"))
    with pytest.raises(CheckpointError, match="the previous one is unusable too"):
        _trainer(out, epochs=4).fit(resume=True)


def test_a_failed_write_leaves_the_last_checkpoint_intact(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert _run(["--task", "find_pattern", "--epochs", "1", "--output", str(out), *TINY]
                ).exit_code == 0
    before = (out / "checkpoint.pt").read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.os, "fsync", disk_full)
    result = _run(["--task", "find_pattern", "--epochs", "2", "--output", str(out), "--resume",
                   "--no-progress"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: cannot write ")
    assert "No space left on device" in result.output
    assert (out / "checkpoint.pt").read_bytes() == before
    assert not list(out.glob(".*.tmp"))


# -- 5. OS errors are one line naming the path ------------------------------------------------


def test_an_output_under_a_file_is_one_clear_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    result = _run(["--task", "find_pattern", "--output", str(tmp_path / "afile" / "sub"), *TINY])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == \
        f"Error: Not a directory: {tmp_path / 'afile' / 'sub'}"


def test_an_unwritable_parent_is_one_clear_line(tmp_path, monkeypatch):
    import pathlib

    real_mkdir = pathlib.Path.mkdir

    def refuse(self, *args, **kwargs):  # a read-only parent (root ignores chmod)
        if str(self).startswith(str(tmp_path / "ro")):
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", refuse)
    result = _run(["--task", "find_pattern", "--output", str(tmp_path / "ro" / "run"), *TINY])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == \
        f"Error: Permission denied: {tmp_path / 'ro' / 'run'}"


# -- 6. stopped within an epoch, continued exactly ----------------------------------------------


def _stop_at(monkeypatch, epoch, step, *, hard=False):
    """Ask the run to stop (like Ctrl-C) after the given step of the given epoch;
    ``hard``: interrupt in the middle of that step instead (a second Ctrl-C)."""
    original = Trainer.train_step
    seen = {"epoch": 0, "step": 0}
    original_epoch = Trainer.train_epoch

    def train_epoch(self, e):
        seen["epoch"], seen["step"] = e, self.partial["step"] if self.partial else 0
        return original_epoch(self, e)

    def train_step(self, batch):
        if hard and (seen["epoch"], seen["step"]) == (epoch, step):
            raise KeyboardInterrupt
        result = original(self, batch)
        seen["step"] += 1
        if not hard and (seen["epoch"], seen["step"]) == (epoch, step):
            self.stop.requested = "SIGINT"
        return result

    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)
    monkeypatch.setattr(Trainer, "train_step", train_step)


@pytest.mark.parametrize("hard", [False, True], ids=["stop-request", "hard-interrupt"])
def test_a_run_stopped_within_an_epoch_continues_exactly(tmp_path, monkeypatch, hard):
    straight = _trainer(tmp_path / "a", epochs=3, checkpoint_every=0.0)
    straight.fit()

    with monkeypatch.context() as m:
        _stop_at(m, epoch=2, step=3, hard=hard)
        stopped = _trainer(tmp_path / "b", epochs=3, checkpoint_every=0.0)
        with pytest.raises(KeyboardInterrupt):
            stopped.fit()
    state = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    # a stop request saves the step it finished; a hard interrupt keeps the step before
    assert state["epoch"] == 1 and state["partial"]["epoch"] == 2
    assert state["partial"]["step"] == 3
    resumed = _trainer(tmp_path / "b", epochs=3, checkpoint_every=0.0)
    resumed.fit(resume=True)
    for key, value in _weights(straight).items():
        torch.testing.assert_close(_weights(resumed)[key], value, rtol=0, atol=0)
    assert [h["train_loss"] for h in resumed.history] == \
        [h["train_loss"] for h in straight.history]
    assert [h["test_error"] for h in resumed.history] == \
        [h["test_error"] for h in straight.history]


def test_checkpoints_within_an_epoch_follow_the_interval(tmp_path, monkeypatch):
    saves = []
    original = Trainer.save

    def counting(self):
        saves.append(self.partial["step"] if self.partial else None)
        return original(self)

    monkeypatch.setattr(Trainer, "save", counting)
    _trainer(tmp_path / "every", epochs=1, checkpoint_every=0.0).fit()
    assert saves == [None, 1, 2, 3, 4, 5, 6, None]  # start, each of 6 steps, epoch end
    saves.clear()
    _trainer(tmp_path / "never", epochs=1, checkpoint_every=None).fit()
    assert saves == [None, None]


def test_the_estimate_covers_the_whole_run_with_evaluation(tmp_path):
    lines = []
    task = task_registry.build("find_pattern")
    config = task.config(**{"data.n_train": 160, "data.n_test": 40, "epochs": 3,
                            "batch_size": 20, "eval_seeds": 2, "pictures": 0,
                            "output": str(tmp_path / "run")})
    Trainer(config, task=task, progress=False, log=lines.append).fit()
    estimate = next(line for line in lines if line.startswith("estimated time:"))
    assert "of training per epoch (8 steps of" in estimate
    assert "per evaluation; the 3 epoch(s) to go: about" in estimate


def test_the_stop_message_starts_on_its_own_line(tmp_path, monkeypatch):
    _stop_at(monkeypatch, epoch=1, step=2)
    result = _run(["--task", "find_pattern", "--epochs", "2", "--output", str(tmp_path / "run"),
                   "--set", "data.n_train=120", "--set", "data.n_test=40", "--set",
                   "pictures=0"])  # progress bars on
    assert result.exit_code == 130
    lines = result.stderr.splitlines()
    assert any(line.startswith("stopped; the checkpoint of epoch 1, step 2 is intact: "
                               "continue with --resume --output") for line in lines), lines
