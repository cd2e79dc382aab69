"""``ats-bench train``: it times the engine's own training step."""

from __future__ import annotations

import json

from click.testing import CliRunner

from ats.bench import train as bench
from ats.cli import bench_main
from ats.train.engine import Trainer


def test_measure_times_the_engines_train_step(monkeypatch):
    calls = []
    original = Trainer.train_step

    def counting(self, batch):
        calls.append(int(batch["x_low"].shape[0]))
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", counting)
    result = bench.measure("find_pattern", {"model": "ats"}, batch_size=4, steps=3, warmup=1,
                           device="cpu", real_data=False)
    # warm-up + timed steps, then two steps for the memory measurement
    assert calls == [4] * (1 + 3 + 2)
    assert result["steps"] == 3 and result["batch_size"] == 4
    assert result["seconds_per_sample"] > 0 and result["parameters"] > 0


def test_the_command_prints_a_row_per_model_and_writes_json(tmp_path):
    path = tmp_path / "bench.json"
    result = CliRunner().invoke(bench_main, [
        "train", "--task", "find_pattern", "--model", "ats", "--model", "cnn_low",
        "--batch-size", "4", "--steps", "1", "--warmup", "0", "--json", str(path)])
    assert result.exit_code == 0, result.output
    payload = json.loads(path.read_text())
    assert [r["model"] for r in payload["results"]] == ["ats", "cnn_low"]
    assert all("error" not in r for r in payload["results"]), payload["results"]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines[0].split()[0] == "model" and lines[1].split()[0] == "ats"
    assert payload["results"][0]["time_ratio_vs_ats"] == 1.0


def test_a_budget_bounds_the_timed_steps():
    result = bench.measure("find_pattern", {"model": "ats"}, batch_size=2, steps=50, warmup=0,
                           device="cpu", real_data=False, budget=1e-9)
    assert result["steps"] == 1


def test_rows_come_as_measured_and_survive_ctrl_c(tmp_path, monkeypatch):
    def fake_run(request, timeout):
        if request["config"]["model"] == "cnn_low":
            raise KeyboardInterrupt
        return {"model": request["config"]["model"], "batch_size": request["batch_size"],
                "steps": 2, "step_seconds_median": 0.5, "seconds_per_sample": 0.125,
                "peak_bytes_per_sample": 2**20}

    monkeypatch.setattr(bench, "_run_isolated", fake_run)
    path = tmp_path / "bench.json"
    result = CliRunner().invoke(bench_main, [
        "train", "--task", "find_pattern", "--model", "cnn_low", "--model", "ats",
        "--batch-size", "4", "--json", str(path)])
    assert result.exit_code == 130
    assert "interrupted: 1 of 2 models measured" in result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.strip()]
    assert rows[1][:3] == ["ats", "4", "2"] and rows[1][3] == "500.0"  # measured first
    payload = json.loads(path.read_text())
    assert payload["complete"] is False and [r["model"] for r in payload["results"]] == ["ats"]
