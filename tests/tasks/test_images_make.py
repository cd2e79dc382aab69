"""``ats-make mega_mnist``: the files are the Megapixel MNIST task's images
(exactly, at the paper's scale), scaled with the canvas, as pyramids that
tifffile and OpenSlide read, with the labels.csv of the ``images`` task."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from ats.cli import make_main
from ats.make.pyramid import pyramid_shapes, write_tiff_pyramid
from ats.sources import open_source
from tasks.images import read_labels
from tasks.mega_mnist.data import make_datasets


def make(tmp_path, mnist_dir, *args):
    result = CliRunner().invoke(make_main, ["mega_mnist", "--data-dir", str(mnist_dir),
                                            "--out", str(tmp_path), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_at_scale_one_the_files_are_the_tasks_images(tmp_path, mnist_dir):
    out = make(tmp_path / "d", mnist_dir, "--width", "300", "--height", "240", "--n-train", "3",
               "--n-test", "2", "--tile", "64")
    assert "--patch-size 50" in out  # the paper's patch at scale 1
    train, test = make_datasets("paper", mnist_dir, width=300, height=240, n_train=3, n_test=2,
                                n_noise=round(50 * 300 * 240 / 1500**2))
    table = read_labels(tmp_path / "d")
    assert table.splits == ["train"] * 3 + ["test"] * 2
    assert [int(v) for v in table.labels] == [*train.targets, *test.targets]
    for i, dataset in enumerate((train, train, train, test, test)):
        k = i if i < 3 else i - 3
        image = tifffile.imread(table.paths[i])
        assert np.array_equal(image, dataset.render_high(k)), table.paths[i]
    source = open_source(table.paths[0])
    assert source.level_shapes == ((240, 300),) and source.tile_shapes == ((64, 64),)


def test_digits_scale_with_the_canvas(tmp_path, mnist_dir):
    make(tmp_path / "k1", mnist_dir, "--width", "300", "--height", "300", "--n-train", "2",
         "--n-test", "1")
    make(tmp_path / "k2", mnist_dir, "--width", "600", "--height", "600", "--n-train", "2",
         "--n-test", "1", "--digit-scale", "2", "--tile", "128", "--format", "tiff")
    one, two = read_labels(tmp_path / "k1"), read_labels(tmp_path / "k2")
    assert one.labels == two.labels
    big = open_source(two.paths[0])
    assert big.level_shapes == ((600, 600), (300, 300))
    # level 1 of the twice-larger image is drawn at scale 1: the scale-1 image itself
    level1 = tifffile.TiffFile(two.paths[0]).series[0].levels[1].asarray()
    assert np.array_equal(level1, tifffile.imread(one.paths[0]))
    level0 = tifffile.imread(two.paths[0])
    assert level0.mean() == pytest.approx(level1.mean(), rel=0.05)  # the same image, larger


def test_npy_format_and_a_second_run_into_the_same_folder(tmp_path, mnist_dir):
    make(tmp_path / "t", mnist_dir, "--width", "200", "--height", "200", "--n-train", "1",
         "--n-test", "1")
    make(tmp_path / "n", mnist_dir, "--width", "200", "--height", "200", "--n-train", "1",
         "--n-test", "1", "--format", "npy")
    tif, npy = read_labels(tmp_path / "t"), read_labels(tmp_path / "n")
    assert str(npy.paths[0]).endswith("train/00000.npy")
    assert np.array_equal(np.load(npy.paths[0]), tifffile.imread(tif.paths[0]))
    again = CliRunner().invoke(make_main, ["mega_mnist", "--data-dir", str(mnist_dir),
                                           "--out", str(tmp_path / "n"), "--width", "200",
                                           "--height", "200"])
    assert again.exit_code != 0 and "already holds a data set" in again.output
    with open(tmp_path / "n" / "labels.csv") as f:
        assert next(csv.reader(f)) == ["path", "label", "split"]


def test_the_pyramid_writer_never_asks_for_more_than_a_tile(tmp_path):
    asked = []

    def render(level, y, x, h, w):
        asked.append((level, h, w))
        return np.full((h, w, 3), level * 40 + (y // 32) % 7, np.uint8)

    shapes = write_tiff_pyramid(tmp_path / "p.tif", (100, 1100), 3, np.uint8, render, tile=32,
                                smallest=200)
    assert shapes == pyramid_shapes((100, 1100), 200) == [(100, 1100), (50, 550), (25, 275),
                                                          (13, 138)]
    assert max(h * w for _, h, w in asked) == 32 * 32
    with tifffile.TiffFile(tmp_path / "p.tif") as tif:
        levels = tif.series[0].levels
        assert [lv.shape for lv in levels] == [(100, 1100, 3), (50, 550, 3), (25, 275, 3),
                                               (13, 138, 3)]
        assert int(levels[2].asarray()[0, 0, 0]) == 80
    with pytest.raises(ValueError, match="multiple of 16"):
        write_tiff_pyramid(tmp_path / "q.tif", (10, 10), 1, np.uint8, render, tile=20)
