"""The command-line entry points, driven as a user would."""

from __future__ import annotations

import json

import pytest
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


def test_every_option_reaches_the_configuration(tmp_path):
    out = tmp_path / "run"
    result = _run([
        "--task", "find_pattern", "--epochs", "1", "--batch-size", "30", "--n-patches", "2",
        "--patch-size", "12x16", "--sampler", "with_replacement", "--extractor", "torch",
        "--device", "cpu", "--seed", "3", "--workers", "0", "--model", "ats",
        "--output", str(out), "--set", "lr=0.002", "--set", "noise=0.2", *TINY,
    ])
    assert result.exit_code == 0, result.output
    c = json.loads((out / "config.json").read_text())
    assert (c["batch_size"], c["n_patches"], c["patch_size"], c["sampler"], c["extractor"]) == \
        (30, 2, [12, 16], "with_replacement", "torch")
    assert (c["seed"], c["lr"], c["data"]["noise"]) == (3, 0.002, 0.2)


def test_resume_extends_a_run(tmp_path):
    out = str(tmp_path / "run")
    assert _run(["--task", "find_pattern", "--epochs", "1", "--output", out, *TINY]).exit_code == 0
    result = _run(["--task", "find_pattern", "--epochs", "2", "--output", out, "--resume",
                   "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{"):])["epochs"] == 2
    refused = _run(["--task", "find_pattern", "--output", out, "--resume", "--n-patches", "4"])
    assert refused.exit_code != 0 and "cannot change n_patches when resuming" in refused.output


@pytest.mark.parametrize("args,message", [
    (["--task", "mega_mnsit"], "unknown task 'mega_mnsit'; known: colon_cancer, find_pattern, mega_mnist, speed_limits. Did you mean 'mega_mnist'?"),
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


def test_ctrl_c_leaves_a_resumable_checkpoint(tmp_path):
    """A real SIGINT to a running `ats-run`, then --resume."""
    import signal
    import subprocess
    import sys
    import time

    import torch

    out = tmp_path / "run"
    cmd = [sys.executable, "-c", "from ats.cli import run_main; run_main()", "--task",
           "find_pattern", "--epochs", "200", "--output", str(out), *TINY]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "metrics.csv").exists() and time.time() < deadline:
            time.sleep(0.2)
        assert (out / "metrics.csv").exists(), "no epoch finished in time"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "--resume" in stderr
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    done = state["epoch"]
    assert done >= 1 and len(state["history"]) == done
    assert not list(out.glob(".*.tmp"))
    result = _run(["--task", "find_pattern", "--epochs", str(done + 1), "--output", str(out),
                   "--resume", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert torch.load(out / "checkpoint.pt", weights_only=False)["epoch"] == done + 1
