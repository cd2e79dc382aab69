"""Megapixel MNIST's four targets (``data.target``; docs/tasks/mega_mnist.md):
majority, max, top and multi, their objectives, and every model trained on
them through the engine."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from ats.cli import run_main
from ats.objective import MultiLabel, SingleLabel
from ats.task import configure
from tests.tasks.test_mega_mnist_data import make, same_draws


@pytest.mark.parametrize("seed", [0, 3])
def test_each_target_is_its_definition_and_changes_only_the_labels(seed):
    sets = {t: make(n_samples=30, seed=seed, target=t) for t in ("majority", "max", "top",
                                                                   "multi")}
    majority = sets["majority"]
    for target, ds in sets.items():
        assert same_draws(ds, majority)
        assert torch.equal(ds[4]["x_high"], majority[4]["x_high"])
    for i in range(30):
        digits = majority.labels[majority.digit_indices[i]]
        rows, cols = majority.positions[i, :, 0], majority.positions[i, :, 1]
        topmost = min(range(5), key=lambda j: (rows[j], cols[j]))
        assert int(sets["majority"][i]["y"]) == majority.targets[i]
        assert int(sets["max"][i]["y"]) == digits.max()
        assert int(sets["top"][i]["y"]) == digits[topmost]
        multi = sets["multi"][i]["y"]
        assert multi.dtype == torch.float32 and multi.shape == (10,)
        assert set(torch.nonzero(multi).flatten().tolist()) == set(digits.tolist())


def test_golden_labels_of_the_first_images():
    """Seed 0 of the synthetic digits (labels i % 10), pinned."""
    ds = {t: make(n_samples=6, seed=0, target=t) for t in ("majority", "max", "top", "multi")}
    assert [int(ds["majority"][i]["y"]) for i in range(6)] == [4, 1, 6, 5, 6, 7]
    assert [int(ds["max"][i]["y"]) for i in range(6)] == [6, 8, 6, 6, 6, 9]
    assert [int(ds["top"][i]["y"]) for i in range(6)] == [4, 1, 6, 5, 6, 7]
    assert [ds["multi"][i]["y"].nonzero().flatten().tolist() for i in range(6)] == \
        [[2, 4, 6], [0, 1, 8], [0, 1, 6], [2, 5, 6], [4, 6], [0, 7, 9]]


def test_unknown_targets_are_refused():
    with pytest.raises(ValueError, match="target must be one of majority, max, top, multi"):
        make(target="min")
    with pytest.raises(ValueError, match=r"data.target expects 'majority' or 'max' or 'top' "
                                         r"or 'multi', got 'min'"):
        configure("mega_mnist", sets=["data.target=min"])


def test_the_objective_follows_the_target():
    task, config = configure("mega_mnist", sets=["data.target=multi"])
    assert isinstance(task.objective(config), MultiLabel) and task.num_classes == 10
    for target in ("majority", "max", "top"):
        task, config = configure("mega_mnist", sets=[f"data.target={target}"])
        assert isinstance(task.objective(config), SingleLabel)
    y = task.synthetic_batch(configure("mega_mnist", sets=["data.target=multi"])[1], 3)["y"]
    assert y.shape == (3, 10)


def test_multi_label_loss_and_exact_match_error():
    objective = MultiLabel()
    logits = torch.tensor([[2.0, -1.0, 3.0], [2.0, 1.0, -3.0]])
    y = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    torch.testing.assert_close(objective.loss(logits, y), bce.mean())
    torch.testing.assert_close(objective.loss(logits, y, reduction="sum"), bce.mean(1).sum())
    # item 0 right in every class; item 1 wrong in one class only: wrong
    assert objective.wrong(logits, y).tolist() == [False, True]
    assert objective.describe(y[0]) == "{0,2}"


@pytest.mark.parametrize("model", ["ats", "dps", "ips", "cnn_low", "cnn_full"])
def test_every_model_trains_on_the_multi_label_target(model, mnist_dir, tmp_path):
    result = CliRunner().invoke(run_main, [
        "--task", "mega_mnist", "--preset", "smoke", "--model", model, "--data-dir",
        str(mnist_dir), "--output", str(tmp_path / model), "--epochs", "1", "--batch-size", "8",
        "--set", "data.target=multi", "--set", "data.n_train=16", "--set", "data.n_test=8",
        "--set", "eval_seeds=1", "--set", "pictures=1", "--set", "head_gain=1", "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    # exact match: a fraction of items; untrained, nearly every item has a wrong class
    assert 0.0 <= summary["final_test_error"] <= 1.0
    # small initial logits: the mean BCE per class starts near log 2 (CE would be near log 10)
    assert summary["final_train_loss"] < 1.0
