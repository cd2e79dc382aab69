"""The ``images`` task: the label table, the checks before training, the
splits, and ``ats-run --task images`` end to end on a small written data set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ats.cli import run_main
from ats.sources import Framed, SourceBatch
from ats.task import configure
from tasks.images import check_files, fold_split, read_labels
from tests.sources import writers


def make_dataset(root, *, sizes=((120, 160), (150, 100), (96, 200)), n=12, channels=3):
    """Files of several sizes and formats (TIFF pyramids, .npy, PNG) and a
    labels.csv with a split column; labels 0/1 by the image's brightness."""
    root.mkdir(parents=True, exist_ok=True)
    rows = ["path,label,split"]
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        label = i % 2
        x = (writers.oracle((channels, h, w), "uint8", i) // 2 + 120 * label).astype(np.uint8)
        name = f"img{i:02d}" + (".tif", ".npy", ".png")[i % 3]
        if name.endswith(".tif"):
            writers.write_tiff(root / name, x, levels=2, tile=32)
        elif name.endswith(".npy"):
            writers.write_npy(root / name, x)
        else:
            writers.write_pillow(root / name, x)
        rows.append(f"{name},{label},{'test' if i >= n - 4 else 'train'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_labels_csv_classes_splits_and_paths(tmp_path):
    (tmp_path / "labels.csv").write_text("path,label\nb.tif,10\na.tif,2\n/abs/c.tif,10\n\n")
    table = read_labels(tmp_path)
    assert table.classes == ["2", "10"]  # integers sort as numbers
    assert table.targets.tolist() == [1, 0, 1]
    assert table.paths[0] == tmp_path / "b.tif" and str(table.paths[2]) == "/abs/c.tif"
    assert table.splits is None
    (tmp_path / "labels.csv").write_text("path,label,split\nx.tif,cat,train\ny.tif,dog,TEST\n")
    table = read_labels(tmp_path)
    assert table.classes == ["cat", "dog"] and table.splits == ["train", "test"]


@pytest.mark.parametrize("text,message", [
    ("file,class\na.tif,1\n", r"columns path,label\[,split\]; path and label missing "
                              r"\(found: file, class\)"),
    ("path,labels\na.tif,1\n", r"label missing \(found: path, labels\)"),
    ("path,label\n", "lists no images"),
    ("path,label\na.tif,\n", "empty path or label on line 2"),
    ("path,label,split\na.tif,1,val\n", r"split must be train or test, not on line 2 \('val'\)"),
])
def test_a_bad_labels_csv_names_the_problem(tmp_path, text, message):
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_labels(tmp_path)


def test_class_folders_with_and_without_a_split(tmp_path):
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (tmp_path / "a" / split / cls).mkdir(parents=True)
            np.save(tmp_path / "a" / split / cls / "x.npy", np.zeros((8, 8), np.uint8))
    (tmp_path / "a" / "train" / "cat" / "notes.txt").write_text("skipped")
    table = read_labels(tmp_path / "a")
    assert table.labels == ["cat", "dog", "cat", "dog"]
    assert table.splits == ["train", "train", "test", "test"]
    (tmp_path / "b" / "ant").mkdir(parents=True)
    np.save(tmp_path / "b" / "ant" / "y.npy", np.zeros((8, 8), np.uint8))
    assert read_labels(tmp_path / "b").splits is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no labels.csv in .*empty and no class"):
        read_labels(tmp_path / "empty")


def test_every_bad_file_is_listed_with_its_reason(tmp_path):
    x = writers.oracle((3, 100, 100), "uint8")
    writers.write_tiff(tmp_path / "ok.tif", x, levels=1)
    data = (tmp_path / "ok.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 3])
    writers.write_tiff(tmp_path / "grey.tif", x[:1], levels=1)
    writers.write_tiff(tmp_path / "wide.tif", x.astype(np.uint16), levels=1)
    (tmp_path / "text.tif").write_text("not a tiff")
    paths = [tmp_path / n for n in ("ok.tif", "gone.tif", "cut.tif", "grey.tif", "text.tif",
                                    "wide.tif")]
    with pytest.raises(ValueError) as err:
        check_files(paths, channels=3)
    lines = str(err.value).splitlines()
    assert lines[0] == "5 of 6 image file(s) cannot be used:"
    assert f"  - {tmp_path / 'gone.tif'}: missing" in lines
    assert any("cut.tif" in l and "truncated" in l for l in lines)
    assert f"  - {tmp_path / 'grey.tif'}: has 1 channel(s), expected 3 (data.channels)" in lines
    assert any("text.tif" in l and "cannot read" in l for l in lines)
    assert f"  - {tmp_path / 'wide.tif'}: dtype uint16, the other files are uint8" in lines
    assert [s.path for s in check_files(paths[:1], channels=3)] == [str(paths[0])]


def test_folds_are_stratified_disjoint_and_balanced():
    targets = np.array([0] * 10 + [1] * 7 + [2] * 3)
    tests = [fold_split(targets, 5, f, seed=3)[1] for f in range(5)]
    assert sorted(np.concatenate(tests).tolist()) == list(range(20))
    assert [len(t) for t in tests] == [4] * 5
    for t in tests:
        assert np.bincount(targets[t], minlength=3)[0] == 2  # 10 cats, 5 folds
    train, test = fold_split(targets, 5, 2, seed=3)
    assert set(train) | set(test) == set(range(20)) and not set(train) & set(test)
    assert not np.array_equal(fold_split(targets, 5, 0, seed=4)[1], tests[0])


def test_items_are_padded_low_views_and_framed_sources(tmp_path):
    root = make_dataset(tmp_path / "data")
    task, config = configure("images", options={"data_dir": str(root)},
                             sets=["data.low_size=32", f"data.cache_dir={tmp_path / 'c'}"])
    train, test = task.datasets(config)
    assert (len(train), len(test)) == (8, 4)
    item = train[1]  # 150x100: 32x21 of the 32x32 view
    assert item["x_low"].shape == (3, 32, 32) and item["x_high"].low_size == (32, 21)
    assert torch.all(item["x_low"][:, :, 21:] == 0) and item["x_low"][:, :, :21].mean() > 0.1
    batch = torch.utils.data.default_collate([train[i] for i in range(3)])
    assert isinstance(batch["x_high"], SourceBatch)
    assert batch["x_high"].low_sizes.tolist() == [[24, 32], [32, 21], [15, 32]]
    assert batch["x_high"].high_sizes.tolist() == [[120, 160], [150, 100], [96, 200]]
    assert batch["x_low"].shape == (3, 3, 32, 32) and batch["y"].tolist() == [0, 1, 0]
    assert task.input_shapes(config) == ((3, 32, 32), (3, 96, 100))
    assert isinstance(item["x_high"], Framed)


def test_ats_run_trains_on_image_files_end_to_end(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "lowviews"
    args = ["--task", "images", "--data-dir", str(root), "--epochs", "2", "--batch-size", "4",
            "--n-patches", "3", "--patch-size", "24", "--output", str(tmp_path / "run"),
            "--no-progress", "--set", "data.low_size=32", "--set", f"data.cache_dir={cache}",
            "--set", "pictures=2", "--set", "eval_seeds=2", "--set", "feature=small_cnn",
            "--set", "attention=small_cnn"]
    result = CliRunner().invoke(run_main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["final_test_error"] in (0.0, 0.125, 0.25, 0.375,
                                                                      0.5, 0.625, 0.75, 0.875, 1.0)
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 3
    assert (tmp_path / "run" / "pictures" / "epoch0002_patches.png").is_file()
    assert len(list(cache.rglob("*.npy"))) == 12  # one low view per image, made once


def test_a_missing_file_stops_the_run_before_anything_is_written(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "data", n=6)
    with (root / "labels.csv").open("a") as f:
        f.write("nowhere/lost.tif,1,train\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(run_main, ["--task", "images", "--data-dir", str(root),
                                           "--output", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code != 0
    assert "1 of 7 image file(s) cannot be used" in result.output
    assert f"{root / 'nowhere' / 'lost.tif'}: missing" in result.output
    assert not (tmp_path / "run").exists()


def test_print_config_sizes_the_model_from_the_label_table(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "data", n=6)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(run_main, ["--task", "images", "--data-dir", str(root),
                                           "--print-config"])
    assert result.exit_code == 0, result.output
    task, config = configure("images", options={"data_dir": str(root)})
    model = task.build_model(config)
    assert model.head.out_features == 2 and type(model.ats.feature).__name__ == "PreActResNet"
    grey = configure("images", options={"data_dir": str(root)}, sets=["data.channels=1"])
    assert type(grey[0].build_model(grey[1]).ats.feature).__name__ == "MNISTFeature"
    no_dir = CliRunner().invoke(run_main, ["--task", "images", "--print-config"])
    assert no_dir.exit_code != 0 and "needs --data-dir DIR" in no_dir.output
    assert not (tmp_path / "runs").exists()
