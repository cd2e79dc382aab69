"""ats.data.image_dataset.ImageFileDataset, the base of the real-image tasks'
datasets: reading images (decoded as stored, cached on request), items, and
class counts and frequencies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ats.data.image_dataset import ImageFileDataset
from ats.data.transforms import resize_bilinear


class Tiles(ImageFileDataset):
    """Image files with given labels: the smallest subclass (docs in the base)."""

    num_classes = 3

    def __init__(self, paths, targets, *, cache=False):
        super().__init__(split="test", image_size=(6, 8), scale=0.5,
                         resize_coordinates="asymmetric", augment=None, augmentations=None,
                         default_augmentations=lambda: [], seed=0, cache=cache)
        self.paths = list(paths)
        self.targets = np.asarray(targets, dtype=np.int64)


def _images(tmp_path, n=4):
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (6, 8, 3), dtype=np.uint8) for _ in range(n)]
    paths = []
    for i, img in enumerate(pixels):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(img).save(paths[-1])
    return paths, pixels


def test_read_image_gives_the_stored_pixels_and_counts_from_the_end(tmp_path):
    paths, pixels = _images(tmp_path)
    ds = Tiles(paths, [0, 1, 1, 0])
    for i in range(4):
        img = ds.read_image(i)
        assert img.dtype == np.uint8 and img.shape == (6, 8, 3)
        np.testing.assert_array_equal(img, pixels[i])
    np.testing.assert_array_equal(ds.read_image(-1), pixels[3])
    with pytest.raises(IndexError, match="index 4 out of range for a dataset of 4 images"):
        ds.read_image(4)
    with pytest.raises(IndexError, match="index -5 out of range"):
        ds[-5]


def test_images_are_cached_only_when_asked(tmp_path):
    paths, pixels = _images(tmp_path, n=2)
    cached, uncached = Tiles(paths, [0, 1], cache=True), Tiles(paths, [0, 1])
    cached.read_image(1)
    uncached.read_image(1)
    paths[1].unlink()  # a cached image is not read again
    np.testing.assert_array_equal(cached.read_image(1), pixels[1])
    np.testing.assert_array_equal(cached[1]["x_high"].permute(1, 2, 0).numpy(), pixels[1])
    with pytest.raises(FileNotFoundError, match="img1.png"):
        uncached.read_image(1)


def test_items_are_the_image_and_its_low_view(tmp_path):
    paths, pixels = _images(tmp_path, n=2)
    item = Tiles(paths, [2, 0])[0]
    assert item["y"] == 2 and item["index"] == 0
    assert item["x_high"].dtype == torch.uint8 and item["x_high"].shape == (3, 6, 8)
    assert torch.equal(item["x_high"], torch.from_numpy(pixels[0]).permute(2, 0, 1))
    assert item["x_low"].dtype == torch.float32 and item["x_low"].shape == (3, 3, 4)
    expected = resize_bilinear(torch.from_numpy(pixels[0]).permute(2, 0, 1).float() / 255, (3, 4),
                               "asymmetric")
    torch.testing.assert_close(item["x_low"], expected)


def test_class_counts_and_frequencies(tmp_path):
    paths, _ = _images(tmp_path, n=4)
    ds = Tiles(paths, [2, 0, 2, 2])
    assert ds.class_counts.dtype == np.int64
    assert ds.class_counts.tolist() == [1, 0, 3]  # a class without images counts 0
    assert Tiles([], []).class_counts.tolist() == [0, 0, 0]
    assert len(ds) == 4 and len(Tiles([], [])) == 0


def test_speed_limits_class_frequencies_and_weights(tmp_path):
    """The speed-limits dataset's frequencies and loss weights come from the
    base class's counts: (1/C) / frequency, 0 for an absent class."""
    from tasks.speed_limits import SpeedLimits

    ds = SpeedLimits.__new__(SpeedLimits)  # the counts need no files
    ds.targets = np.array([0, 0, 1, 3, 3, 3, 0, 1], dtype=np.int64)
    np.testing.assert_allclose(ds.class_frequencies, [3 / 8, 2 / 8, 0, 3 / 8])
    np.testing.assert_allclose(ds.class_weights(), [(1 / 4) / (3 / 8), (1 / 4) / (2 / 8), 0,
                                                    (1 / 4) / (3 / 8)])
