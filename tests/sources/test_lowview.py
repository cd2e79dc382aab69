"""Low views: area averaging (exact block means, fractional coverage), the
pyramid level chosen, streaming over tiles, and the on-disk cache."""

from __future__ import annotations

import numpy as np
import pytest

from ats.sources import (
    LowViewCache,
    TileCache,
    choose_level,
    fit_size,
    low_view,
    open_source,
)
from ats.sources.lowview import area_weights
from tests.sources import writers


def block_mean(x: np.ndarray, f: int) -> np.ndarray:
    C, H, W = x.shape
    return x.reshape(C, H // f, f, W // f, f).astype(np.float64).mean((2, 4))


def test_an_integer_factor_is_the_block_mean(tmp_path):
    x = writers.oracle((3, 120, 160), "uint8")
    writers.write_tiff(tmp_path / "a.tif", x, levels=1, tile=32)
    for source in (open_source(tmp_path / "a.tif"), open_source(x)):  # tiles, in place
        view = low_view(source, (30, 40))
        assert view.dtype == np.float32 and view.shape == (3, 30, 40)
        np.testing.assert_allclose(view, block_mean(x, 4) / 255, rtol=0, atol=1e-6)


def test_fractional_coverage_is_weighted_by_area():
    # 5 pixels onto 2: output 0 = x0 + x1 + half of x2, over 2.5 pixels
    j0, w = area_weights(5, 2, 0, 5)
    assert j0 == 0
    np.testing.assert_allclose(w, [[0.4, 0.4, 0.2, 0, 0], [0, 0, 0.2, 0.4, 0.4]])
    # a part of the input starts at the output pixel it first touches
    j0, w = area_weights(5, 2, 3, 5)
    assert j0 == 1 and w.shape == (1, 2)
    x = np.zeros((1, 10, 10), np.float32)
    x[:, :, 5:] = 1.0  # right half white
    view = low_view(open_source(x), (3, 3))
    np.testing.assert_allclose(view[0], [[0, 0.5, 1]] * 3, atol=1e-6)
    flat = np.full((2, 37, 53), 0.25, np.float64)
    np.testing.assert_allclose(low_view(open_source(flat), (5, 7)), 0.25, atol=1e-7)


def test_fit_size_keeps_the_aspect():
    assert fit_size((1000, 500), (256, 256)) == (256, 128)
    assert fit_size((300, 1200), (256, 256)) == (64, 256)
    assert fit_size((10, 100000), (256, 256)) == (1, 256)


def test_the_nearest_pyramid_level_is_read_and_no_other(tmp_path, monkeypatch):
    x = writers.oracle((1, 256, 320), "uint16")
    levels = writers.write_tiff(tmp_path / "p.tif", x, levels=3, tile=32)
    source = open_source(tmp_path / "p.tif")
    assert [choose_level(source, s) for s in ((256, 320), (128, 160), (100, 100), (64, 80),
                                              (20, 20), (300, 400))] == [0, 1, 1, 2, 2, 0]
    read = []
    original = type(source)._read_tile
    monkeypatch.setattr(type(source), "_read_tile",
                        lambda self, *a: read.append(a) or original(self, *a))
    view = low_view(source, (32, 40))  # level 2 (64x80) halved
    assert {level for level, _, _ in read} == {2}
    assert len(read) == 2 * 3  # level 2's 64x80 pixels are 2x3 tiles, each read once
    np.testing.assert_allclose(view, block_mean(levels[2], 2) / 65535, atol=1e-6)


def test_the_disk_cache_serves_the_second_epoch_and_notices_a_new_file(tmp_path, monkeypatch):
    x = writers.oracle((3, 96, 96), "uint8")
    writers.write_tiff(tmp_path / "a.tif", x, levels=1, tile=32)
    cache = LowViewCache(tmp_path / "cache")
    source = open_source(tmp_path / "a.tif")
    first = low_view(source, (24, 24), cache=cache)
    assert (cache.hits, cache.misses) == (0, 1)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1
    monkeypatch.setattr(type(source), "_read_tile",
                        lambda *a: pytest.fail("a cached low view read a tile"))
    second = low_view(source, (24, 24), cache=cache)
    assert cache.hits == 1 and np.array_equal(first, second)
    monkeypatch.undo()
    # another size, or the same path holding another file, is another entry
    low_view(source, (12, 12), cache=cache)
    writers.write_tiff(tmp_path / "a.tif", 255 - x, levels=1, tile=32)
    changed = low_view(open_source(tmp_path / "a.tif"), (24, 24), cache=cache)
    np.testing.assert_allclose(changed, 1 - first, atol=1e-6)
    assert cache.misses == 3 and len(list((tmp_path / "cache").rglob("*.npy"))) == 3
    # in-memory data has no file identity: never written
    low_view(open_source(x), (24, 24), cache=cache)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 3


def test_tile_cache_is_bounded_in_bytes_least_recently_used_first():
    cache = TileCache(max_bytes=3000)
    tiles = {k: np.full(1000, k, np.uint8) for k in range(4)}
    for k in (0, 1, 2):
        cache.put(k, tiles[k])
    assert cache.get(0) is not None  # 0 is now the most recent
    cache.put(3, tiles[3])  # over 3000 bytes: 1, the least recently used, goes
    assert cache.get(1) is None and cache.get(0) is not None and cache.bytes == 3000
    cache.put(9, np.zeros(4000, np.uint8))  # larger than the whole cache: not kept
    assert cache.get(9) is None and len(cache) == 3
    with pytest.raises(ValueError, match="max_bytes"):
        TileCache(-1)


def _rss_file_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:"))


def test_streaming_a_memory_map_leaves_it_unmapped(tmp_path):
    x = np.full((1, 8192, 8192), 200, np.uint8)  # 64 MiB on disk
    np.save(tmp_path / "big.npy", x)
    del x
    source = open_source(tmp_path / "big.npy")
    before = _rss_file_kib()
    view = low_view(source, (16, 16))
    assert np.allclose(view, 200 / 255)
    # at most one 1024-row band (8 MiB) is ever mapped at once, and none after
    assert _rss_file_kib() - before < 8 << 10
