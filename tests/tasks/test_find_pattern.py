"""The find_pattern synthetic dataset (tasks/find_pattern): items are pure
functions of (seed, split, index), the low view is the block mean of the
image, one of four equally bright textures sits on a cell, and the task
passes its options through."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ats.registry import task as task_registry
from tasks.find_pattern import PATTERNS, FindPatternDataset


def _where(item, cell=8):
    """The cell (row, col) whose block holds the texture: only there can a
    pixel reach 255 (the noise stays below ``noise * 255``)."""
    rows, cols = np.nonzero(item["x_high"][0].numpy() == 255)
    return int(rows.min()) // cell * cell, int(cols.min()) // cell * cell


def test_every_item_holds_its_texture_on_a_cell_in_noise_below_the_amplitude():
    data = FindPatternDataset(40, noise=0.3, seed=5)
    for i in range(40):
        item = data[i]
        high = item["x_high"][0].numpy().astype(np.int64)
        assert item["x_high"].dtype == torch.uint8 and item["x_high"].shape == (1, 128, 128)
        assert item["y"].dtype == torch.int64 and 0 <= int(item["y"]) < 4 and item["index"] == i
        r, c = _where(item)
        block = high[r:r + 8, c:c + 8]
        texture = PATTERNS[int(item["y"])].astype(bool)
        assert (block[texture] == 255).all()  # the texture's pixels are on
        outside = np.ones_like(high, dtype=bool)
        outside[r:r + 8, c:c + 8] = ~texture
        assert high[outside].max() <= round(0.3 * 255)  # everything else is noise


def test_the_low_view_is_the_block_mean_and_cannot_tell_the_textures_apart():
    item = FindPatternDataset(3, seed=1)[2]
    high = item["x_high"][0].double() / 255
    torch.testing.assert_close(item["x_low"][0].double(),
                               high.reshape(16, 8, 16, 8).mean((1, 3)), rtol=0, atol=1e-6)
    assert item["x_low"].dtype == torch.float32 and item["x_low"].shape == (1, 16, 16)
    assert PATTERNS.shape == (4, 8, 8)
    assert PATTERNS.reshape(4, -1).mean(1).tolist() == [0.5] * 4  # same brightness
    assert len({p.tobytes() for p in PATTERNS}) == 4


def test_items_depend_only_on_seed_split_and_index():
    a, b = FindPatternDataset(10, seed=3), FindPatternDataset(10, seed=3)
    assert all(torch.equal(a[i]["x_high"], b[i]["x_high"]) for i in (9, 0, 4))
    assert torch.equal(a[4]["x_high"], FindPatternDataset(100, seed=3)[4]["x_high"])
    assert not torch.equal(a[4]["x_high"], FindPatternDataset(10, seed=4)[4]["x_high"])
    assert not torch.equal(a[4]["x_high"], FindPatternDataset(10, seed=3, train=False)[4]["x_high"])


def test_classes_and_positions_vary():
    data = FindPatternDataset(400, seed=0)
    labels = np.array([int(data[i]["y"]) for i in range(400)])
    assert np.bincount(labels, minlength=4).min() >= 70  # about 100 each
    cells = {_where(data[i]) for i in range(60)}
    assert len(cells) >= 50  # 256 cells, spread


def test_sizes_noise_and_errors():
    item = FindPatternDataset(1, size=64, cell=16, noise=0.0)[0]
    assert item["x_high"].shape == (1, 64, 64) and item["x_low"].shape == (1, 4, 4)
    assert set(np.unique(item["x_high"].numpy())) <= {0, 255}  # no noise
    with pytest.raises(ValueError, match="must be a positive multiple of cell"):
        FindPatternDataset(1, size=60, cell=16)
    with pytest.raises(ValueError, match=r"noise must be in \[0, 1\]"):
        FindPatternDataset(1, noise=1.5)
    with pytest.raises(ValueError, match="n must be an integer >= 0"):
        FindPatternDataset(-1)
    with pytest.raises(IndexError, match="index 3 out of range for 3 items"):
        FindPatternDataset(3)[3]


def test_the_task_passes_its_options_to_the_datasets():
    task = task_registry.build("find_pattern")
    config = task.config(**{"data.n_train": 7, "data.n_test": 5, "data.size": 64,
                            "data.noise": 0.1, "data.seed": 2})
    train, test = task.datasets(config)
    assert (len(train), len(test), train.train, test.train) == (7, 5, True, False)
    assert (train.size, train.noise, train.seed) == (64, 0.1, 2)
    assert task.input_shapes(config) == ((1, 8, 8), (1, 64, 64))
    assert tuple(train[0]["x_low"].shape) == (1, 8, 8)
