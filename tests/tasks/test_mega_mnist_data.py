"""Tests of the Megapixel MNIST generator (docs/tasks/mega_mnist.md, "The generator").

Synthetic digits only, except the last tests, which use the real MNIST files
when present. Golden values were produced by a transcription of the original
``scripts/make_mnist.py`` (numpy's global legacy RNG) on the same inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.transform import rescale, resize
from torch.utils.data import default_collate

import tasks.mega_mnist.generator as generator
from tasks.mega_mnist import PRESETS, MegaMNISTConfig, MegapixelMNIST, make_datasets


def synthetic_digits(n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """``n`` distinct digits with every pixel in 1..255 (so any erasure shows), labels i % 10."""
    images = ((np.arange(n)[:, None, None] * 7 + np.arange(784).reshape(28, 28)) % 255 + 1).astype(np.uint8)
    return images, np.arange(n) % 10


def make(n_samples: int = 20, **kw) -> MegapixelMNIST:
    images, labels = synthetic_digits()
    kw = {"width": 240, "height": 200, "scale": 0.12, **kw}
    return MegapixelMNIST(images, labels, n_samples=n_samples, **kw)


def items_equal(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in ("x_low", "x_high", "y"))


def same_draws(a: MegapixelMNIST, b: MegapixelMNIST) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in
               ("digit_indices", "targets", "positions", "noise_patterns", "noise_positions", "noise_ids"))


# --------------------------------------------------------------------------
# Faithfulness to the original generator


def test_golden_values_of_the_original_generator():
    ds = make(n_samples=20, seed=0, train=True)
    assert ds.targets.tolist() == [4, 1, 6, 5, 6, 7, 0, 5, 2, 0, 2, 0, 9, 0, 2, 0, 9, 1, 5, 6]
    assert ds.digit_indices[0].tolist() == [44, 4, 14, 12, 6]
    assert ds.digit_indices[1].tolist() == [1, 11, 41, 8, 50]
    assert ds.positions[0].tolist() == [[154, 91], [166, 141], [107, 24], [99, 87], [41, 192]]
    assert ds.noise_positions[0, :3].tolist() == [[72, 111], [60, 60], [86, 46]]
    assert ds.noise_ids[0, :8].tolist() == [11, 47, 41, 46, 21, 37, 13, 49]
    assert ds.noise_patterns.dtype == np.float32 and ds.noise_patterns.shape == (50, 28, 28)
    assert int((ds.noise_patterns > 0).sum()) == 3279
    assert [int((p > 0).sum()) for p in ds.noise_patterns[:5]] == [58, 73, 67, 57, 61]
    assert ds.noise_patterns.astype(np.float64).sum() == pytest.approx(2943.655592, abs=1e-5)
    assert int(ds.render_high(0).astype(np.int64).sum()) == 655853


def test_global_rng_untouched():
    np.random.seed(123)
    expected = np.random.rand(3)
    np.random.seed(123)
    make(n_samples=5)
    np.testing.assert_array_equal(np.random.rand(3), expected)


def test_noise_patterns_are_unions_of_lines_from_the_corner():
    p = make(n_samples=1).noise_patterns
    on = p[p > 0]
    assert on.min() >= 0.8 and on.max() < 1.0
    # Every line A[i] starts at pixel (0, 0); B only adds pixels.
    assert (p[:, 0, 0] >= 0.8).all()
    counts = (p > 0).reshape(50, -1).sum(1)
    assert counts.min() >= 28 and counts.max() <= 2 * 56


# --------------------------------------------------------------------------
# Determinism and seeds


def test_determinism_and_seed_dependence():
    a, b = make(seed=5), make(seed=5)
    assert same_draws(a, b)
    for i in (0, 7, 19):
        assert items_equal(a[i], b[i])
        assert items_equal(a[i], a[i])  # rendering twice gives the same arrays
    c = make(seed=6)
    assert not np.array_equal(a.targets, c.targets)
    assert not np.array_equal(a.positions, c.positions)
    assert not torch.equal(a[0]["x_high"], c[0]["x_high"])


def test_train_uses_seed_plus_one():
    train = make(seed=3, train=True)
    test_like = make(seed=4, train=False)
    assert same_draws(train, test_like)
    assert items_equal(train[2], test_like[2])
    assert not np.array_equal(train.targets, make(seed=3, train=False).targets)


def test_rng_stream_does_not_depend_on_noise_flag():
    on, off = make(noise=True), make(noise=False)
    assert same_draws(on, off)
    # Without noise x_high holds exactly the 5 non-overlapping digits.
    images, _ = synthetic_digits()
    for i in range(3):
        assert int(off.render_high(i).astype(np.int64).sum()) == int(images[off.digit_indices[i]].astype(np.int64).sum())
        assert not np.array_equal(on.render_high(i), off.render_high(i))


# --------------------------------------------------------------------------
# Content of the draws


@pytest.mark.parametrize("n_digits,n_positive", [(5, 3), (7, 4), (3, 3)])
def test_label_is_the_strict_majority(n_digits, n_positive):
    ds = make(n_samples=200, n_digits=n_digits, n_positive=n_positive, width=300, height=300)
    _, labels = synthetic_digits()
    classes = labels[ds.digit_indices]  # (n, n_digits)
    assert classes.shape == (200, n_digits)
    assert (classes[:, :n_positive] == ds.targets[:, None]).all()
    assert (classes[:, n_positive:] != ds.targets[:, None]).all()
    counts = np.stack([np.bincount(c, minlength=10) for c in classes])
    others = counts.copy()
    others[np.arange(200), ds.targets] = -1
    assert (counts[np.arange(200), ds.targets] > others.max(1)).all()
    assert set(ds.targets.tolist()) == set(range(10))
    for i in range(3):
        assert ds[i]["y"].dtype == torch.int64 and int(ds[i]["y"]) == ds.targets[i]


def test_positives_are_drawn_with_replacement():
    # 60 digits give 6 per class: over 300 images some positive triple repeats an index.
    ds = make(n_samples=300, width=300, height=300)
    pos = ds.digit_indices[:, :3]
    assert any(len(set(row.tolist())) < 3 for row in pos)


def test_digits_do_not_overlap_and_stay_inside():
    # A crowded 112x140 canvas (capacity 20) forces many rejections.
    ds = make(n_samples=300, width=140, height=112, noise=False)
    pos = ds.positions
    assert pos.shape == (300, 5, 2)
    assert pos[..., 0].min() >= 0 and pos[..., 0].max() <= 112 - 28
    assert pos[..., 1].min() >= 0 and pos[..., 1].max() <= 140 - 28
    assert pos[..., 1].max() > 112 - 28  # columns span the width: axes not swapped
    d = np.abs(pos[:, :, None, :] - pos[:, None, :, :])  # (n, 5, 5, 2)
    overlap = (d[..., 0] < 28) & (d[..., 1] < 28)
    overlap[:, np.arange(5), np.arange(5)] = False
    assert not overlap.any()


def test_noise_placements():
    ds = make(n_samples=100, width=300, height=100)
    npos = ds.noise_positions
    assert npos.shape == (100, 50, 2) and ds.noise_ids.shape == (100, 50)
    assert npos[..., 0].min() >= 28 and npos[..., 0].max() < 100 - 28
    assert npos[..., 1].min() >= 28 and npos[..., 1].max() < 300 - 28
    assert npos[..., 1].max() > 100  # columns span the width
    assert ds.noise_ids.min() == 0 and ds.noise_ids.max() == 49
    ds2 = make(n_samples=4, n_noise=7)
    assert ds2.noise_positions.shape == (4, 7, 2)


# --------------------------------------------------------------------------
# Rendering


def test_paper_shapes_cheaply():
    cfg = PRESETS["paper"]
    assert cfg.high_shape == (1, 1500, 1500) and cfg.low_shape == (1, 180, 180)
    assert (cfg.scale, cfg.noise, cfg.n_noise, cfg.n_train, cfg.n_test, cfg.seed) == (0.12, True, 50, 5000, 1000, 0)
    images, labels = synthetic_digits()
    ds = MegapixelMNIST.from_config(cfg, images, labels, train=False)
    item = ds[0]  # the one paper-size render of this file
    assert item["x_high"].shape == (1, 1500, 1500) and item["x_high"].dtype == torch.uint8
    assert item["x_low"].shape == (1, 180, 180) and item["x_low"].dtype == torch.float32
    assert 0 <= float(item["x_low"].min()) and float(item["x_low"].max()) <= 1
    assert float(item["x_low"].max()) > 0.5


def test_high_is_digits_then_noise_overwriting():
    ds = make(n_samples=10)
    images, _ = synthetic_digits()
    erased = 0
    for i in range(10):
        high = ds.render_high(i)
        # Oracle: paste digits, then the 28x28 noise blocks in order.
        expected = np.zeros((200, 240), np.uint8)
        for (r, c), j in zip(ds.positions[i], ds.digit_indices[i]):
            expected[r:r + 28, c:c + 28] = images[j]
        digits_only = expected.copy()
        for (r, c), k in zip(ds.noise_positions[i], ds.noise_ids[i]):
            expected[r:r + 28, c:c + 28] = (ds.noise_patterns[k] * 255).astype(np.uint8)
        np.testing.assert_array_equal(high, expected)
        # The last noise block is intact, zeros included.
        (r, c), k = ds.noise_positions[i, -1], ds.noise_ids[i, -1]
        np.testing.assert_array_equal(high[r:r + 28, c:c + 28], (ds.noise_patterns[k] * 255).astype(np.uint8))
        # Digit pixels (all > 0) set to 0 by a noise block's background.
        erased += int(((digits_only > 0) & (high == 0)).sum())
    assert erased > 100


def test_low_is_built_object_by_object():
    ds = make(n_samples=5, noise=False)  # scale 0.12: 3x3 blocks that never overlap
    images, _ = synthetic_digits()
    for i in range(5):
        low = ds.render_low(i)
        assert low.shape == (24, 28)
        for (r, c), j in zip(ds.positions[i], ds.digit_indices[i]):
            block = (255 * rescale(images[j].astype(np.float32) / 255, 0.12, order=1, mode="constant",
                                   anti_aliasing=True, channel_axis=None)).astype(np.uint8)
            assert block.shape == (3, 3)
            r0, c0 = int(r * 0.12), int(c * 0.12)
            np.testing.assert_array_equal(low[r0:r0 + 3, c0:c0 + 3], block)
        assert np.count_nonzero(low) == 5 * 9  # nothing else drawn
        # Not a resize of the high-resolution image.
        resized = (255 * resize(ds.render_high(i) / 255.0, (24, 28), order=1, anti_aliasing=True)).astype(np.uint8)
        assert np.abs(resized.astype(int) - low.astype(int)).max() > 50
    item = ds[0]
    np.testing.assert_array_equal(item["x_low"][0].numpy(), ds.render_low(0).astype(np.float32) / 255)


def test_low_noise_is_pasted_over_digits():
    ds = make(n_samples=5)
    for i in range(5):
        low = ds.render_low(i)
        (r, c), k = ds.noise_positions[i, -1], ds.noise_ids[i, -1]
        block = (255 * rescale(ds.noise_patterns[k], 0.12, order=1, mode="constant", anti_aliasing=True,
                               channel_axis=None)).astype(np.uint8)
        r0, c0 = int(r * 0.12), int(c * 0.12)
        np.testing.assert_array_equal(low[r0:r0 + 3, c0:c0 + 3], block)


def test_low_blocks_are_cropped_at_the_border():
    # scale 0.2: int(472*0.2) + round(28*0.2) = 94 + 6 = 100 = int(500*0.2): fits;
    # height 503, scale 0.125: a digit at row 475 -> int(59.375) + round(3.5)=4 -> 63 > int(62.875)=62.
    ds = make(n_samples=60, width=503, height=503, scale=0.125, noise=False)
    assert ds.low_shape == (1, 62, 62)
    for i in range(60):
        assert ds.render_low(i).shape == (62, 62)
    assert int(ds.positions[..., 0].max() * 0.125) + 4 > 62  # the cropping path was taken


def test_indexing_and_collation():
    ds = make(n_samples=4)
    assert len(ds) == 4
    assert items_equal(ds[-1], ds[3])
    with pytest.raises(IndexError, match="index 4 out of range for a dataset of 4 images"):
        ds[4]
    assert len(list(iter(ds))) == 4  # the sequence protocol stops on IndexError
    batch = default_collate([ds[0], ds[1]])
    assert batch["x_high"].shape == (2, 1, 200, 240) and batch["x_low"].shape == (2, 1, 24, 28)
    assert batch["y"].tolist() == ds.targets[:2].tolist()


# --------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize("kw,match", [
    ({"width": 50, "height": 50, "noise": False}, r"a 50x50 image \(height x width\) holds at most 1 .*n_digits=5"),
    ({"width": 56, "height": 56, "noise": False, "n_digits": 5, "n_positive": 3}, "holds at most 4"),
    ({"n_positive": 2}, r"n_positive must be a strict majority of n_digits=5 .*got 2"),
    ({"n_digits": 4, "n_positive": 2}, "strict majority of n_digits=4"),
    ({"n_positive": 6}, "strict majority"),
    ({"n_digits": 0}, "n_digits must be an integer >= 1"),
    ({"width": 20, "noise": False}, "width must be an integer >= 28"),
    ({"height": 50}, "height must be >= 56 when noise=True"),
    ({"scale": 0.0}, r"scale must be a number in \(0, 1\]"),
    ({"scale": 1.5}, r"scale must be a number in \(0, 1\]"),
    ({"scale": 0.001}, "empty low-resolution view"),
    ({"n_noise": -1}, "n_noise must be an integer >= 0"),
    ({"n_samples": -1}, "n_samples must be an integer >= 0"),
    ({"seed": -1}, "seed must be an integer"),
    ({"seed": 2**32 - 1, "train": True}, "seed must be an integer"),
])
def test_invalid_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        make(**kw)


def test_crowded_but_possible_geometry_raises_instead_of_looping(monkeypatch):
    monkeypatch.setattr(generator, "MAX_POSITION_TRIES", 300)
    # 6 digits fit in 56x84 only as an exact tiling, which random draws miss.
    with pytest.raises(ValueError, match=r"could not place digit \d of n_digits=6 .*after 300 draws.*56x84"):
        make(n_samples=5, width=84, height=56, noise=False, n_digits=6, n_positive=4)


def test_invalid_digit_arrays():
    images, labels = synthetic_digits()
    with pytest.raises(ValueError, match=r"images must have shape \(N, 28, 28\), got \(60, 28, 27\)"):
        MegapixelMNIST(images[:, :, :27], labels, n_samples=1)
    with pytest.raises(ValueError, match=r"labels must be integers of shape \(60,\)"):
        MegapixelMNIST(images, labels[:59], n_samples=1)
    with pytest.raises(ValueError, match=r"every class 0..9; missing \[7\]"):
        MegapixelMNIST(images[labels != 7], labels[labels != 7], n_samples=1)
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        MegapixelMNIST(images, labels + 1, n_samples=1)
    with pytest.raises(ValueError, match="floats in \\[0, 1\\]"):
        MegapixelMNIST(images.astype(np.float32), labels, n_samples=1)  # 0..255 floats
    # Floats in [0, 1] are accepted and give the same images as uint8.
    a = MegapixelMNIST(images.astype(np.float32) / 255, labels, n_samples=2, width=240, height=200)
    b = MegapixelMNIST(images, labels, n_samples=2, width=240, height=200)
    assert items_equal(a[1], b[1])


# --------------------------------------------------------------------------
# Presets and make_datasets


def test_presets():
    assert set(PRESETS) == {"paper", "easy", "smoke"}
    easy, smoke = PRESETS["easy"], PRESETS["smoke"]
    assert (easy.width, easy.height, easy.scale, easy.noise, easy.n_train, easy.n_test) == (500, 500, 0.2, False, 5000, 1000)
    assert easy.low_shape == (1, 100, 100)
    assert smoke.high_shape == (1, 160, 160) and smoke.low_shape == (1, 40, 40) and not smoke.noise
    for cfg in PRESETS.values():
        cfg.validate()


def test_make_datasets_uses_each_split(monkeypatch):
    import ats.data.mnist

    tr, te = synthetic_digits(60), synthetic_digits(40)
    calls = []

    def fake_load(split, data_dir=None, download=True):
        calls.append((split, data_dir, download))
        return ats.data.mnist.MNIST(*(tr if split == "train" else te))

    monkeypatch.setattr(ats.data.mnist, "load_mnist", fake_load)
    train, test = make_datasets("smoke", "/some/dir", download=False, n_train=6, n_test=3, seed=2)
    assert calls == [("train", "/some/dir", False), ("test", "/some/dir", False)]
    assert len(train) == 6 and len(test) == 3
    assert train.images is tr[0] and test.images is te[0]
    assert train.train and not test.train and train.seed == test.seed == 2
    assert same_draws(train, MegapixelMNIST(*tr, n_samples=6, width=160, height=160, scale=0.25, n_noise=1, noise=False,
                                            seed=2, train=True))
    assert train[0]["x_high"].shape == (1, 160, 160) and train[0]["x_low"].shape == (1, 40, 40)
    cfg = MegaMNISTConfig(width=100, height=100, scale=0.25, noise=False, n_train=2, n_test=2)
    train, _ = make_datasets(cfg)
    assert train.low_shape == (1, 25, 25) and not train.noise


def test_make_datasets_rejects_bad_arguments_before_loading(monkeypatch):
    import ats.data.mnist

    def fail(*a, **k):
        raise AssertionError("MNIST should not be loaded")

    monkeypatch.setattr(ats.data.mnist, "load_mnist", fail)
    with pytest.raises(ValueError, match="unknown Megapixel MNIST preset 'huge'; known presets: paper, easy, smoke"):
        make_datasets("huge")
    with pytest.raises(ValueError, match=r"unknown Megapixel MNIST setting\(s\) \['widht'\]"):
        make_datasets("paper", widht=10)
    with pytest.raises(ValueError, match="n_positive must be a strict majority"):
        make_datasets("paper", n_positive=1)


def test_real_mnist_matches_the_original_paper_dataset(mnist_dir):
    """The paper preset on the real digits: golden draws of the original generator."""
    train, test = make_datasets("paper", mnist_dir, download=False)
    assert len(train) == 5000 and len(test) == 1000
    assert train.targets[:8].tolist() == [4, 1, 9, 2, 4, 8, 8, 1]
    assert train.digit_indices[0].tolist() == [40721, 53519, 9071, 48424, 8674]
    assert train.positions[0].tolist() == [[433, 209], [1317, 1378], [44, 327], [1216, 246], [1138, 1064]]
    assert train.noise_positions[0, :2].tolist() == [[60, 1204], [62, 909]]
    assert train.noise_ids[0, :5].tolist() == [12, 38, 27, 41, 49]
    assert test.targets[:8].tolist() == [5, 6, 3, 3, 0, 9, 6, 7]
    assert test.digit_indices[0].tolist() == [6965, 2103, 9338, 5342, 8669]
    assert test.positions[0].tolist() == [[1240, 884], [940, 406], [1457, 433], [526, 568], [1398, 899]]
    assert int(train.render_high(0).astype(np.int64).sum()) == 875865
    assert int(test.render_high(0).astype(np.int64).sum()) == 932666
    # Labels of the digits are the target's for the first 3.
    assert (train.labels[train.digit_indices[:, :3]] == train.targets[:, None]).all()
