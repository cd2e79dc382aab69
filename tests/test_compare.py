"""``ats-compare``: several runs side by side (ats/compare/). Three tiny
find_pattern runs (ats, dps, ips) are compared as a user would, and each
output is checked against what it is drawn from: the selections against each
model's own forward pass, the table against metrics.csv."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ats.cli import compare_main
from ats.compare import Run, load_run, selection_columns
from ats.compare.report import first_test_items
from ats.config import RunConfig
from ats.registry import task as task_registry
from ats.train.engine import Trainer
from tests.train.helpers import make_trainer

MODELS = ("ats", "dps", "ips")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One tiny finished run per model (ATS for two epochs, the others one),
    2 steps per epoch, 40 test images."""
    root = tmp_path_factory.mktemp("runs")
    for model in MODELS:
        make_trainer(root / model, model=model, max_steps=2,
                     epochs=2 if model == "ats" else 1).fit()
    return {model: root / model for model in MODELS}


def _compare(*args: str):
    return CliRunner().invoke(compare_main, [str(a) for a in args])


def test_ats_compare_writes_the_two_figures_and_the_table(runs, tmp_path):
    out = tmp_path / "cmp"
    result = _compare(*runs.values(), "--out", out, "--images", 2,
                      "--label", "ATS", "--label", "DPS", "--label", "IPS")
    assert result.exit_code == 0, result.output
    for name in ("curves.png", "selections.png", "compare.md"):
        assert (out / name).stat().st_size > 0 and str(out / name) in result.output
    rows = (out / "compare.md").read_text().splitlines()[2:]
    assert [r.split("|")[1:3] for r in rows] == [[" ATS ", " ats "], [" DPS ", " dps "],
                                                 [" IPS ", " ips "]]
    # by default a run is named by its model and directory
    assert load_run(runs["dps"]).label == "dps (dps)"


def _own_output(path: Path, batch: dict, seed: int):
    """The run's model as `ats-run --resume` restores it, on ``batch`` with
    its sampling generator seeded by ``seed``: independent of ats.compare."""
    config = RunConfig.from_dict(json.loads((path / "config.json").read_text()))
    trainer = Trainer(config, task=task_registry.build(config.task), progress=False,
                      log=lambda message: None)
    trainer.load(path / "checkpoint.pt")
    model = trainer.classifier.eval()
    with torch.no_grad():
        out = model(batch["x_low"], batch["x_high"],
                    generator=torch.Generator().manual_seed(seed))
    return trainer, out


def test_the_patches_drawn_are_each_models_own_selection_with_that_seed(runs):
    batch = first_test_items(load_run(runs["ats"]), 3)
    read = [load_run(runs[m]) for m in MODELS]
    columns = selection_columns(read, batch, seed=5, device="cpu")
    for model, column in zip(MODELS, columns):
        trainer, out = _own_output(runs[model], batch, seed=5)
        own = out.ats.offsets if model == "ats" else out.selection.offsets
        assert torch.equal(column.chosen.offsets, own), model
        assert column.predictions == [str(int(p)) for p in out.logits.argmax(1)]
        # ... on the first test images of the run's own test set
        for i in range(3):
            assert torch.equal(batch["x_low"][i], trainer.test_set[i]["x_low"])
    # the seed is what makes it reproducible: ATS draws other patches with another
    again = selection_columns(read[:1], batch, seed=5, device="cpu")[0]
    other = selection_columns(read[:1], batch, seed=6, device="cpu")[0]
    assert torch.equal(again.chosen.offsets, columns[0].chosen.offsets)
    assert not torch.equal(other.chosen.offsets, columns[0].chosen.offsets)


def test_a_model_that_reads_no_patches_gets_a_column_without_them(runs, tmp_path):
    make_trainer(tmp_path / "cnn", model="cnn_low", max_steps=1, epochs=1).fit()
    out = tmp_path / "cmp"
    result = _compare(runs["ats"], tmp_path / "cnn", "--out", out, "--images", 1)
    assert result.exit_code == 0, result.output
    batch = first_test_items(load_run(runs["ats"]), 1)
    column = selection_columns([load_run(tmp_path / "cnn")], batch, seed=0, device="cpu")[0]
    assert column.chosen is None and len(column.predictions) == 1


def _metrics_csv(path: Path) -> list[dict[str, str]]:
    with open(path / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_the_table_says_what_metrics_csv_says(runs, tmp_path):
    # a run still training, whose last epoch was not evaluated (eval_every > 1)
    training = tmp_path / "training"
    shutil.copytree(runs["ats"], training)
    last = _metrics_csv(training)[-1]
    row = {**last, "epoch": "3", "test_loss": "", "test_error": "", "test_error_std": "",
           "epoch_seconds": "7.5"}
    with open(training / "metrics.csv", "a", newline="") as f:
        csv.DictWriter(f, fieldnames=list(row)).writerow(row)
    dirs = [runs["ats"], runs["dps"], runs["ips"], training]
    out = tmp_path / "cmp"
    result = _compare(*dirs, "--out", out, "--images", 1)
    assert result.exit_code == 0, result.output
    table = (out / "compare.md").read_text().splitlines()[2:]
    assert len(table) == len(dirs)
    for path, line in zip(dirs, table):
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows = _metrics_csv(path)
        tested = [r for r in rows if r["test_error"] != ""]
        best = min(tested, key=lambda r: float(r["test_error"]))
        final, std = cells[3].split(" ± ")
        best_error, best_epoch = cells[4].rstrip(")").split(" (")
        assert cells[1] == json.loads((path / "config.json").read_text())["model"]
        assert int(cells[2]) == len(rows)
        assert float(final) == pytest.approx(float(tested[-1]["test_error"]), abs=5e-5)
        assert float(std) == pytest.approx(float(tested[-1]["test_error_std"]), abs=5e-5)
        assert float(best_error) == pytest.approx(float(best["test_error"]), abs=5e-5)
        assert best_epoch == best["epoch"]
        seconds = statistics.median(float(r["epoch_seconds"]) for r in rows)
        assert float(cells[5]) == pytest.approx(seconds, abs=5e-3)
        # find_pattern records where its texture is: the patches read on it
        assert float(cells[6]) == pytest.approx(float(tested[-1]["test_hit_rate"]), abs=5e-4)
    assert table[-1].split("|")[3].strip() == "3"


def _edited_copy(run: Path, to: Path, edit) -> Path:
    shutil.copytree(run, to)
    config = json.loads((to / "config.json").read_text())
    edit(config)
    (to / "config.json").write_text(json.dumps(config))
    return to


def test_runs_of_another_task_or_other_data_options_are_refused(runs, tmp_path):
    noisier = _edited_copy(runs["dps"], tmp_path / "noisier",
                           lambda c: c["data"].update(noise=0.2, n_test=50))
    result = _compare(runs["ats"], noisier, "--out", tmp_path / "cmp")
    assert result.exit_code != 0
    assert "not tested on the same images" in result.output
    assert "data.noise: 0.3" in result.output and "0.2" in result.output
    assert "data.n_test: 40" in result.output and "50" in result.output
    assert "data.size" not in result.output  # only what differs

    other = _edited_copy(runs["ips"], tmp_path / "other", lambda c: c.update(task="mega_mnist"))
    result = _compare(runs["ats"], other, "--out", tmp_path / "cmp")
    assert result.exit_code != 0
    assert "task: 'find_pattern'" in result.output and "'mega_mnist'" in result.output
    assert not (tmp_path / "cmp").exists()  # refused before anything is written

    elsewhere = _edited_copy(runs["ips"], tmp_path / "elsewhere",
                             lambda c: c.update(data_dir=str(tmp_path / "other_files")))
    result = _compare(runs["ats"], elsewhere, "--out", tmp_path / "cmp")
    assert result.exit_code != 0
    assert "data_dir: None" in result.output and "other_files" in result.output
    assert "pass --data-dir" in result.output
    assert not (tmp_path / "cmp").exists()
    # --data-dir: every run reads the same files, so they are compared
    result = _compare(runs["ats"], elsewhere, "--out", tmp_path / "cmp", "--data-dir", tmp_path)
    assert result.exit_code == 0, result.output


def test_what_is_not_a_run_or_not_yet_evaluated_is_named(runs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _compare(runs["ats"], empty, "--out", tmp_path / "cmp")
    assert result.exit_code != 0
    assert f"{empty} is not a run directory: it has no config.json" in result.output

    result = _compare(tmp_path / "missing", "--out", tmp_path / "cmp")
    assert "is not a run directory: no such directory" in result.output

    (empty / "config.json").write_text("[1, 2]")
    result = _compare(empty, "--out", tmp_path / "cmp")
    assert "its config.json is not a run configuration" in result.output

    started = tmp_path / "started"
    started.mkdir()
    shutil.copy(runs["ats"] / "config.json", started / "config.json")
    result = _compare(runs["ats"], started, "--out", tmp_path / "cmp")
    assert result.exit_code != 0
    assert f"the run {started} has no evaluation to compare yet" in result.output

    result = _compare(runs["ats"], runs["dps"], "--out", tmp_path / "cmp", "--label", "one")
    assert result.exit_code != 0
    assert "labels: give one per run (2 runs), got 1" in result.output


def test_metrics_csv_is_read_as_numbers_and_a_bad_one_is_named(tmp_path):
    from ats.compare import read_metrics

    path = tmp_path / "metrics.csv"
    path.write_text("epoch,test_error,note\n1,0.5,first\n2,,\n")
    assert read_metrics(path) == [{"epoch": 1, "test_error": 0.5, "note": "first"},
                                  {"epoch": 2, "test_error": None, "note": None}]
    path.write_text("epoch,test_error\n1,oops\n")
    with pytest.raises(ValueError, match=r"column 'test_error' holds 'oops', not a number"):
        read_metrics(path)
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a run's metrics.csv: it has no epoch column"):
        read_metrics(path)


def test_a_training_only_data_option_does_not_make_another_test_set(tmp_path):
    from ats.compare import check_same_test_set
    from ats.task import configure

    def run(name, *sets):
        return Run(tmp_path / name, name, configure("mega_mnist", sets=sets)[1])

    default, original = run("default"), run("original", "data.curriculum=()")
    check_same_test_set([original, default])  # the curriculum changes only training canvases
    with pytest.raises(ValueError, match=r"data.noise: True .* vs False"):
        check_same_test_set([default, run("clean", "data.noise=false")])
