"""Every source format against an in-memory oracle of the same pixels:
shapes and levels, patches across tile borders, partly and wholly outside
the image, every dtype the format holds, the float conversion."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from ats.core.extract import extract_patches
from ats.sources import open_source, read_patches
from ats.sources.cache import TileCache
from tests.sources import writers

SHAPE = (3, 150, 170)  # not a multiple of the 32-pixel tiles
PATCH = (40, 45)  # larger than a tile: every patch crosses tile borders


def border_offsets(H: int, W: int, n: int = 60, seed: int = 0) -> torch.Tensor:
    """(1, n, 2) corners: random ones, on tile borders, partly outside on
    every side, wholly outside and far away."""
    rng = np.random.default_rng(seed)
    fixed = [(0, 0), (31, 31), (32, 64), (-10, -7), (H - 20, W - 20), (-PATCH[0], 5),
             (H, W), (H + 100, -500), (10**9, -(10**9)), (-39, -44), (H - 1, W - 1), (96, 127)]
    rand = rng.integers(-50, max(H, W) + 10, (n - len(fixed), 2))
    return torch.tensor(np.concatenate([np.array(fixed), rand]))[None]


def reference(x: np.ndarray, offsets: torch.Tensor, as_float: bool = False) -> torch.Tensor:
    return extract_patches(x[None], offsets, PATCH, backend="reference", as_float=as_float)


def _tiff(path, x):
    return writers.write_tiff(path, x, levels=3)


def _alone(write):
    """A writer of one level, returning the levels written."""
    def levels(path, x):
        write(path, x)
        return [x]
    return levels


#: format -> (file name, writer returning the oracle's levels)
WRITERS = {
    "tiff": ("img.tif", _tiff),
    "ome_tiff": ("img.ome.tif", lambda p, x: writers.write_ome_tiff(p, x, levels=2)),
    "zarr": ("img.zarr", _alone(writers.write_zarr)),
    "ngff": ("img.ome.zarr", lambda p, x: writers.write_ngff(p, x, levels=3)),
    "npy": ("img.npy", _alone(writers.write_npy)),
    "png": ("img.png", lambda p, x: [writers.write_pillow(p, x)]),
}


def written(fmt: str, dtype: str, tmp_path, shape=SHAPE, seed: int = 0):
    """(file, levels of the oracle) for one format and dtype."""
    x = writers.oracle(shape, dtype, seed)
    if fmt == "png" and dtype == "uint16":
        x = x[:1]  # Pillow writes 16-bit grey only
    name, write = WRITERS[fmt]
    return tmp_path / name, write(tmp_path / name, x)


CASES = [(fmt, dt) for fmt, dtypes in writers.FORMATS.items() for dt in dtypes]


@pytest.mark.parametrize("fmt,dtype", CASES)
def test_patches_equal_the_oracle_at_every_level(fmt, dtype, tmp_path):
    path, levels = written(fmt, dtype, tmp_path)
    source = open_source(path)
    assert source.shape == levels[0].shape and source.dtype == np.dtype(dtype)
    assert source.level_shapes == tuple(lv.shape[1:] for lv in levels)
    source.verify()
    for level, x in enumerate(levels):
        offsets = border_offsets(*x.shape[1:], seed=level)
        got = read_patches([source], offsets, PATCH, level=level, cache=TileCache())
        assert torch.equal(got, reference(x, offsets)), f"level {level}"
        as_float = read_patches([source], offsets, PATCH, level=level, as_float=True)
        assert as_float.dtype == torch.float32
        assert torch.equal(as_float, reference(x, offsets, as_float=True))


@pytest.mark.parametrize("fmt", ["tiff", "ngff", "npy", "png"])
def test_a_pickled_source_reads_the_same_patches(fmt, tmp_path):
    path, levels = written(fmt, "uint8", tmp_path)
    source = open_source(path)
    copy = pickle.loads(pickle.dumps(source))
    assert len(pickle.dumps(source)) < 10_000  # the file name travels, not the pixels
    offsets = border_offsets(*SHAPE[1:])
    assert torch.equal(read_patches([copy], offsets, PATCH), reference(levels[0], offsets))


def test_tiff_layouts_planar_stripped_grey_and_uncompressed(tmp_path):
    x = writers.oracle(SHAPE, "uint8", 3)
    cases = {"planar.tif": dict(planar=True), "strips.tif": dict(tile=None, rowsperstrip=7),
             "raw.tif": dict(compression=None), "grey.tif": dict()}
    for name, kw in cases.items():
        data = x[:1] if name == "grey.tif" else x
        writers.write_tiff(tmp_path / name, data, levels=1, **kw)
        source = open_source(tmp_path / name)
        offsets = border_offsets(*SHAPE[1:], seed=len(name))
        assert source.shape == data.shape, name
        assert torch.equal(read_patches([source], offsets, PATCH), reference(data, offsets)), name
    assert open_source(tmp_path / "strips.tif").tile_shapes[0] == (7, SHAPE[2])


def test_channels_last_npy_is_read_by_tiles_and_in_memory_arrays_in_place(tmp_path):
    x = writers.oracle((3, 600, 700), "uint16", 4)
    writers.write_npy(tmp_path / "hwc.npy", x, channels_last=True)
    hwc = open_source(tmp_path / "hwc.npy")
    assert hwc.shape == x.shape and hwc.array() is None and hwc.tile_shapes[0] == (512, 512)
    chw = open_source(x)
    assert chw.array() is not None
    offsets = torch.tensor([[[500, 500], [-3, 690], [250, 100]]])
    for s in (hwc, chw, open_source(torch.from_numpy(x))):
        assert torch.equal(read_patches([s], offsets, PATCH), reference(x, offsets))


def test_images_of_different_sizes_and_formats_in_one_batch(tmp_path):
    images = [writers.oracle((3, h, w), "uint8", seed=h) for h, w in
              ((150, 170), (97, 260), (300, 64))]
    writers.write_tiff(tmp_path / "a.tif", images[0], levels=1)
    writers.write_zarr(tmp_path / "b.zarr", images[1], chunks=40)
    writers.write_npy(tmp_path / "c.npy", images[2])
    sources = [open_source(tmp_path / n) for n in ("a.tif", "b.zarr", "c.npy")]
    offsets = torch.cat([border_offsets(*x.shape[1:], n=20, seed=i)
                         for i, x in enumerate(images)])
    got = read_patches(sources, offsets, PATCH, as_float=True)
    for b, x in enumerate(images):
        assert torch.equal(got[b:b + 1], reference(x, offsets[b:b + 1], as_float=True)), b


def test_a_batch_must_share_channels_and_dtype(tmp_path):
    rgb = open_source(writers.oracle((3, 40, 40), "uint8"))
    grey = open_source(writers.oracle((1, 40, 40), "uint8"))
    wide = open_source(writers.oracle((3, 40, 40), "uint16"))
    offsets = torch.zeros((2, 1, 2), dtype=torch.int64)
    with pytest.raises(ValueError, match="same channels and dtype.*item 1"):
        read_patches([rgb, grey], offsets, 8)
    with pytest.raises(ValueError, match="same channels and dtype"):
        read_patches([rgb, wide], offsets, 8)
    with pytest.raises(TypeError, match="integers"):
        read_patches([rgb], torch.zeros((1, 1, 2)), 8)
    with pytest.raises(ValueError, match=r"shape \(B=2, N, 2\)"):
        read_patches([rgb, rgb], torch.zeros((1, 1, 2), dtype=torch.int64), 8)
    with pytest.raises(ValueError, match="level 1 does not exist"):
        read_patches([rgb], torch.zeros((1, 1, 2), dtype=torch.int64), 8, level=1)


def test_the_tile_cache_serves_the_second_read(tmp_path):
    path, levels = written("tiff", "uint8", tmp_path)
    source = open_source(path)
    cache = TileCache()
    offsets = border_offsets(*SHAPE[1:])
    read_patches([source], offsets, PATCH, cache=cache)
    decoded = cache.misses
    assert decoded > 0 and cache.hits == 0
    # 5x5 tiles of 32 pixels cover the 150x170 image: at most 30 are ever decoded
    assert decoded <= 30 and len(cache) == decoded
    again = read_patches([source], offsets, PATCH, cache=cache)
    assert cache.misses == decoded and cache.hits == decoded
    assert torch.equal(again, reference(levels[0], offsets))


def test_only_the_tiles_the_patches_touch_are_decoded(tmp_path, monkeypatch):
    x = writers.oracle((1, 320, 320), "uint8")
    writers.write_tiff(tmp_path / "big.tif", x, levels=1)
    source = open_source(tmp_path / "big.tif")
    read = []
    original = type(source)._read_tile
    monkeypatch.setattr(type(source), "_read_tile",
                        lambda self, *a: read.append(a) or original(self, *a))
    # one patch inside tile (2, 3), one across tiles (4..5, 6..7), one outside
    offsets = torch.tensor([[[70, 100], [150, 220], [-500, 40]]])
    got = read_patches([source], offsets, (20, 20), cache=TileCache())
    assert sorted(read) == [(0, 2, 3), (0, 4, 6), (0, 4, 7), (0, 5, 6), (0, 5, 7)]
    assert torch.equal(got, extract_patches(x[None], offsets, 20, backend="reference"))
