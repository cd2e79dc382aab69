"""The command-line entry points, driven as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ats.cli import bench_main, plugins_main, run_main

TINY = ["--set", "data.n_train=120", "--set", "data.n_test=40", "--set", "eval_seeds=2",
        "--set", "pictures=1", "--no-progress"]


def _run(args):
    return CliRunner().invoke(run_main, args, catch_exceptions=False)


def test_ats_run_trains_and_writes_a_summary(tmp_path):
    out = tmp_path / "run"
    result = _run(["--task", "find_pattern", "--epochs", "1", "--output", str(out), *TINY])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["epochs"] == 1 and summary["task"] == "find_pattern"
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["n_train"] == 120 and config["eval_seeds"] == 2
    assert "configuration:" in result.stderr


def test_every_option_reaches_the_configuration_and_takes_effect(tmp_path, monkeypatch):
    from ats.classifier import ATSClassifier
    from ats.core.sampling import WithReplacement
    from ats.plugins.extractors.torch import TorchExtractor
    from ats.train import engine
    from ats.train.data import EpochSampler

    seen, loaders, extracted = {}, [], []
    original_step, original_loader = engine.Trainer.train_step, engine.make_loader
    original_extract = TorchExtractor.extract

    def step(self, batch):
        def keep(module, args, output):
            seen["out"] = output
        handle = self.classifier.register_forward_hook(keep)
        try:
            result = original_step(self, batch)
        finally:
            handle.remove()
        seen.setdefault("steps", []).append(batch["index"].tolist())
        seen.update(trainer=self, batch=batch, lr=self.optimizer.param_groups[0]["lr"])
        return result

    def loader(dataset, sampler, **kwargs):
        loaders.append(kwargs["workers"])
        return original_loader(dataset, sampler, **kwargs)

    def extract(self, *args, **kwargs):
        extracted.append(self.name)
        return original_extract(self, *args, **kwargs)

    monkeypatch.setattr(engine.Trainer, "train_step", step)
    monkeypatch.setattr(engine, "make_loader", loader)
    monkeypatch.setattr(TorchExtractor, "extract", extract)
    out = tmp_path / "run"
    result = _run([
        "--task", "find_pattern", "--epochs", "1", "--batch-size", "30", "--n-patches", "2",
        "--patch-size", "12x16", "--sampler", "with_replacement", "--extractor", "torch",
        "--device", "cpu", "--seed", "3", "--workers", "1", "--model", "ats",
        "--output", str(out), "--set", "lr=0.002", "--set", "noise=0.2",
        "--set", "max_steps=1", *TINY,
    ])
    assert result.exit_code == 0, result.output
    c = json.loads((out / "config.json").read_text())
    assert (c["batch_size"], c["n_patches"], c["patch_size"], c["sampler"], c["extractor"]) == \
        (30, 2, [12, 16], "with_replacement", "torch")
    assert (c["seed"], c["workers"], c["lr"], c["data"]["noise"]) == (3, 1, 0.002, 0.2)
    # ... and each takes effect in the run
    trainer, batch, out_ = seen["trainer"], seen["batch"], seen["out"]
    assert len(seen["steps"]) == 1  # max_steps
    assert batch["x_low"].shape[0] == 30  # batch size
    assert tuple(out_.ats.patches.shape) == (30, 2, 1, 12, 16)  # n_patches, patch_size
    assert type(trainer.classifier) is ATSClassifier  # model
    assert type(trainer.classifier.ats.sampler) is WithReplacement  # sampler
    assert extracted and set(extracted) == {"torch"}  # extractor
    assert trainer.device == torch.device("cpu")  # device
    assert loaders and set(loaders) == {1}  # workers, for training and evaluation
    assert seen["lr"] == 0.002  # lr
    order = EpochSampler(120, shuffle=True, seed=3)
    order.set_epoch(1)
    assert seen["steps"][0] == list(order)[:30]  # seed: the data order of seed 3
    background = batch["x_high"][batch["x_high"] < 255]  # noise: pixels in [0, 0.2 * 255]
    assert 45 <= int(background.max()) <= 51


def test_resume_extends_a_run(tmp_path):
    out = str(tmp_path / "run")
    assert _run(["--task", "find_pattern", "--epochs", "1", "--output", out, *TINY]).exit_code == 0
    # the task comes from the run's config.json: --task is not needed to continue it
    result = _run(["--epochs", "2", "--output", out, "--resume", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{"):])["epochs"] == 2
    other = _run(["--task", "mega_mnist", "--output", out, "--resume", "--no-progress"])
    assert other.exit_code != 0 and "holds a 'find_pattern' run, not 'mega_mnist'" in other.output
    refused = _run(["--task", "find_pattern", "--output", out, "--resume", "--n-patches", "4"])
    assert refused.exit_code != 0 and "cannot change n_patches when resuming" in refused.output


@pytest.mark.parametrize("args,message", [
    (["--task", "mega_mnsit"], "unknown task 'mega_mnsit'; known: colon_cancer, find_pattern, images, mega_mnist, speed_limits. Did you mean 'mega_mnist'?"),
    (["--task", "find_pattern", "--model", "resnet"], "unknown model 'resnet'"),
    (["--task", "find_pattern", "--sampler", "gumbel"], "unknown sampler 'gumbel'"),
    (["--task", "find_pattern", "--extractor", "numpy"], "unknown extractor 'numpy'"),
    (["--task", "find_pattern", "--preset", "huge"], "unknown preset 'huge'"),
    (["--task", "find_pattern", "--set", "lerning_rate=1"], "unknown setting 'lerning_rate'"),
    (["--task", "find_pattern", "--set", "lr"], "--set expects key=value"),
    (["--task", "find_pattern", "--set", "epochs=many"], "epochs expects an integer"),
    (["--task", "find_pattern", "--batch-size", "0"], "batch_size must be a positive integer"),
    (["--task", "find_pattern", "--n-patches", "1000"], "n_patches=1000 is larger than the attention map"),
    (["--task", "find_pattern", "--patch-size", "500"], "patch_size 500 does not fit"),
    (["--task", "find_pattern", "--patch-size", "ab"], "expected an int or ints like 50"),
    (["--task", "find_pattern", "--resume"], "--resume needs --output"),
    (["--epochs", "1"], "Missing option '--task'"),
])
def test_bad_input_gets_a_clear_message_and_writes_nothing(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(run_main, [*args, "--no-progress"])
    assert result.exit_code != 0
    assert message in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "runs").exists()


def test_missing_mnist_files_fail_before_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ATS_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    import ats.data.mnist as mnist

    def offline(url, dest, timeout=60.0):
        raise OSError("network is unreachable")

    monkeypatch.setattr(mnist, "download_file", offline)
    result = CliRunner().invoke(run_main, ["--task", "mega_mnist", "--preset", "smoke",
                                           "--data-dir", str(tmp_path / "empty"), "--no-progress"])
    assert result.exit_code != 0
    assert "train-images-idx3-ubyte" in result.output and "ATS_DATA_DIR" in result.output
    assert not (tmp_path / "runs").exists()


def test_ats_plugins_lists_every_kind():
    result = CliRunner().invoke(plugins_main, [])
    assert result.exit_code == 0
    for line in ("attention (", "feature (", "sampler (", "extractor (", "task (",
                 "without_replacement", "numba", "mega_mnist", "find_pattern"):
        assert line in result.output
    only = CliRunner().invoke(plugins_main, ["sampler", "--pattern", "with_*"])
    assert "with_replacement" in only.output and "extractor" not in only.output


def test_ats_bench_lists_its_commands():
    result = CliRunner().invoke(bench_main, ["--help"])
    assert result.exit_code == 0 and "extract" in result.output and "train" in result.output


SIGNAL_PLUGIN = '''"""Test plugin: a signal to the run in one training step.

$ATS_TEST_SIGNAL is NAME:STEP[:group], the signal and the training step
(counted from 1 over the whole run) during which it is sent, to the process
alone or, with ``group``, to its whole process group (data workers included)
from another process, as Ctrl-C in a terminal, `timeout` or a batch scheduler
send it.
"""
import os
import signal
import subprocess
import sys
import time

from ats.classifier import ATSClassifier

_name, _step, *_to = os.environ["ATS_TEST_SIGNAL"].split(":")
_forward = ATSClassifier.forward
_steps = 0


def forward(self, *args, **kwargs):
    global _steps
    if self.training:
        _steps += 1
        if _steps == int(_step):
            if _to == ["group"]:
                # from another process, as a terminal or scheduler sends it (a
                # DataLoader worker exits quietly when the sender is its parent)
                subprocess.run([sys.executable, "-c", "import os, signal, sys; "
                                "os.killpg(int(sys.argv[1]), getattr(signal, sys.argv[2]))",
                                str(os.getpgid(0)), _name], check=True, start_new_session=True)
                time.sleep(1.0)  # a worker the signal kills is dead, and noticed, by then
            else:
                os.kill(os.getpid(), getattr(signal, _name))
    return _forward(self, *args, **kwargs)


ATSClassifier.forward = forward
'''


@pytest.mark.parametrize("name,workers", [("SIGINT", 0), ("SIGTERM", 0),
                                          ("SIGINT", 2), ("SIGTERM", 2)])
def test_a_signal_stops_the_run_at_the_step_reached_and_it_resumes(tmp_path, name, workers):
    """A real Ctrl-C or SIGTERM to a running `ats-run`, sent at a chosen step
    (a plugin module sends it from inside that step: no timing of the run),
    then --resume. With data workers the signal goes to the whole process
    group, workers included, as a terminal or a scheduler sends it."""
    import os
    import subprocess
    import sys

    import torch

    (tmp_path / "signal_at_step.py").write_text(SIGNAL_PLUGIN)
    to = ":group" if workers else ""
    env = {**os.environ, "ATS_TEST_SIGNAL": f"{name}:8{to}",  # 6 steps per epoch: epoch 2, step 2
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ats", "--plugin", "signal_at_step", "--task", "find_pattern",
           "--epochs", "3", "--batch-size", "20", "--workers", str(workers), "--output", str(out),
           *TINY]
    # its own session, so that a signal to its process group does not reach pytest
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600,
                          start_new_session=True)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "stopped; the checkpoint of epoch 2, step 2 is intact: continue with --resume " \
           f"--output {out}" in proc.stderr
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 1 and len(state["history"]) == 1
    assert (state["partial"]["epoch"], state["partial"]["step"]) == (2, 2)
    assert not list(out.glob(".*.tmp"))
    result = _run(["--task", "find_pattern", "--epochs", "3", "--output", str(out), "--resume",
                   "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"resumed from {out / 'checkpoint.pt'} at epoch 2, step 2" in result.stderr
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 3 and state["partial"] is None and len(state["history"]) == 3


# -- resuming: what is refused, and where a run goes by default ---------------------------------


def test_resume_without_a_config_json_is_refused(tmp_path):
    result = CliRunner().invoke(run_main, ["--task", "find_pattern", "--resume", "--output",
                                           str(tmp_path / "nothing"), "--no-progress"])
    assert result.exit_code == 1
    assert f"no run to resume in {tmp_path / 'nothing'} (no config.json)" in result.output
    assert not (tmp_path / "nothing").exists()


def test_resume_of_another_tasks_run_is_refused(tmp_path):
    from ats.registry import task as task_registry

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(task_registry.build("find_pattern").config().to_json())
    result = CliRunner().invoke(run_main, ["--task", "mega_mnist", "--resume", "--output",
                                           str(run), "--no-progress"])
    assert result.exit_code == 1
    assert f"{run} holds a 'find_pattern' run, not 'mega_mnist'" in result.output
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


def test_resume_with_cross_validate_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(run_main, ["--task", "colon_cancer", "--cross-validate",
                                           "--resume", "--output", str(tmp_path / "cv")])
    assert result.exit_code == 2
    assert "--cross-validate continues unfinished folds by itself; drop --resume" in result.output
    assert not (tmp_path / "cv").exists()


def test_the_default_output_is_runs_task_model_time(tmp_path, monkeypatch):
    import re

    monkeypatch.chdir(tmp_path)
    result = _run(["--task", "find_pattern", "--epochs", "1", "--set", "max_steps=1", *TINY])
    assert result.exit_code == 0, result.output
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and re.fullmatch(r"find_pattern-ats-\d{8}-\d{6}", runs[0].name)
    assert (runs[0] / "checkpoint.pt").is_file() and (runs[0] / "summary.json").is_file()
    assert json.loads((runs[0] / "config.json").read_text())["output"] == \
        str(Path("runs") / runs[0].name)
