"""The real-image tasks end to end on fixtures in each data set's on-disk
format, at the real image sizes: ats-run, baselines, cross-validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from scipy.io import savemat

from ats.cli import run_main
from ats.registry import task as task_registry

QUICK = ["--epochs", "1", "--batch-size", "4", "--no-progress", "--set", "eval_seeds=2",
         "--set", "pictures=2"]


def _speed_limits(root: Path) -> Path:
    rng = np.random.default_rng(0)
    lines = {
        "Set1": ["a.jpg:", "b.jpg:VISIBLE, 700, 400, 650, 350, PROHIBITORY, 50_SIGN;",
                 "c.jpg:VISIBLE, 300, 200, 250, 150, PROHIBITORY, 70_SIGN;",
                 "d.jpg:VISIBLE, 900, 500, 850, 450, PROHIBITORY, 80_SIGN;",
                 "e.jpg:BLURRED, 900, 500, 850, 450, PROHIBITORY, 80_SIGN;"],
        "Set2": ["f.jpg:", "g.jpg:VISIBLE, 700, 400, 650, 350, PROHIBITORY, 50_SIGN;",
                 "h.jpg:VISIBLE, 300, 200, 250, 150, PROHIBITORY, 70_SIGN;"],
    }
    for split, entries in lines.items():
        folder = root / split
        folder.mkdir(parents=True)
        (folder / "annotations.txt").write_text("\n".join(entries) + "\n")
        for entry in entries:
            img = rng.integers(0, 256, (960, 1280, 3), dtype=np.uint8)
            Image.fromarray(img).save(folder / entry.split(":")[0], quality=90)
    return root


def _colon(root: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(1)
    for i in range(1, n + 1):
        folder = root / f"img{i}"
        folder.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (500, 500, 3), dtype=np.uint8)).save(folder / f"img{i}.bmp")
        savemat(folder / f"img{i}_epithelial.mat", {"detection": np.ones((i % 2 * 3, 2))})
    return root


def _summary(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{"):])


@pytest.mark.filterwarnings("ignore:speed_limits")
def test_speed_limits_trains_from_a_data_dir(tmp_path):
    data = _speed_limits(tmp_path / "sts")
    out = tmp_path / "run"
    result = CliRunner().invoke(run_main, ["--task", "speed_limits", "--data-dir", str(data),
                                           "--output", str(out), *QUICK])
    summary = _summary(result)
    assert summary["epochs"] == 1 and 0 <= summary["final_test_error"] <= 1
    assert (out / "pictures" / "epoch0001_attention.png").is_file()
    config = json.loads((out / "config.json").read_text())
    assert (config["n_patches"], config["patch_size"], config["receptive_field"]) == (5, 100, 9)
    assert config["lr_decay_at"] == [250] and config["smoothing"] == 1e-4


def test_speed_limits_baseline_and_class_weights(tmp_path):
    data = _speed_limits(tmp_path / "sts")
    task = task_registry.build("speed_limits")
    with pytest.warns(UserWarning, match="4 train / 3 test images after filtering, not the paper's 747 / 684"):
        train, _ = task.datasets(task.config(data_dir=str(data)))
    with pytest.warns(UserWarning, match="not the paper's"):
        result = CliRunner().invoke(run_main, [
            "--task", "speed_limits", "--data-dir", str(data), "--model", "cnn_low",
            "--output", str(tmp_path / "low"), "--set", "class_weights=true", *QUICK])
    assert _summary(result)["model"] == "cnn_low"
    weights = task.class_weights(train)
    # 4 kept training images, one per class: equal weights of (1/4) / (1/4)
    torch.testing.assert_close(weights, torch.ones(4))


def test_speed_limits_without_data_names_the_layout(tmp_path, monkeypatch):
    monkeypatch.delenv("ATS_DATA_DIR", raising=False)
    result = CliRunner().invoke(run_main, ["--task", "speed_limits", "--data-dir",
                                           str(tmp_path / "nothing"), "--output",
                                           str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code != 0
    assert "Swedish Traffic Signs data not found" in result.output and "Set1" in result.output
    assert not (tmp_path / "run").exists()


def test_colon_cancer_cross_validation_reports_mean_and_std(tmp_path):
    data = _colon(tmp_path / "colon")
    out = tmp_path / "cv"
    args = ["--task", "colon_cancer", "--data-dir", str(data), "--output", str(out),
            "--cross-validate", "--set", "data.k=3", "--set", "data.n_images=6", *QUICK]
    summary = _summary(CliRunner().invoke(run_main, args))
    assert summary["k"] == 3 and len(summary["fold_test_errors"]) == 3
    errors = np.array(summary["fold_test_errors"])
    assert summary["mean_test_error"] == pytest.approx(errors.mean())
    assert summary["std_test_error"] == pytest.approx(errors.std(ddof=1))
    assert json.loads((out / "cross_validation.json").read_text())["k"] == 3
    # held out: the folds' test items are disjoint and cover all images
    task = task_registry.build("colon_cancer")
    seen = []
    for fold in range(3):
        config = task.config(data_dir=str(data), **{"data.k": 3, "data.n_images": 6,
                                                     "data.fold": fold})
        train, test = task.datasets(config)
        assert not set(train.numbers) & set(test.numbers)
        seen += list(test.numbers)
    assert sorted(seen) == list(range(1, 7))
    # running the command again finds every fold done and trains nothing
    again = _summary(CliRunner().invoke(run_main, args))
    assert again["fold_test_errors"] == summary["fold_test_errors"]


@pytest.mark.parametrize("name", ["mega_mnist", "speed_limits", "colon_cancer", "find_pattern"])
def test_synthetic_batches_have_the_real_sizes_and_the_ats_model_runs(name):
    task = task_registry.build(name)
    config = task.config()
    low, high = task.input_shapes(config)
    batch = task.synthetic_batch(config, 2, generator=torch.Generator().manual_seed(0))
    assert tuple(batch["x_low"].shape) == (2, *low) and tuple(batch["x_high"].shape) == (2, *high)
    model = task.build_model(config)
    out = model(batch["x_low"], batch["x_high"])
    assert out.logits.shape == (2, task.num_classes)
    assert out.ats.patches.shape[:2] == (2, config.n_patches)
