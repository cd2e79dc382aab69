"""Sources and their files: opening by format, clear errors for missing,
unknown, corrupt and truncated files, a worker process reopening a source,
and OpenSlide on a generic tiled TIFF."""

from __future__ import annotations

import multiprocessing
import pickle

import numpy as np
import pytest
import torch

from ats.core.extract import extract_patches
from ats.registry import source as source_registry
from ats.sources import SourceError, open_source, read_patches, supported_formats
from ats.sources.base import close_handles
from tests.sources import writers


def test_open_source_picks_the_plugin_by_what_it_is(tmp_path):
    x = writers.oracle((3, 64, 64), "uint8")
    writers.write_tiff(tmp_path / "a.tif", x, levels=1)
    writers.write_npy(tmp_path / "a.npy", x)
    writers.write_zarr(tmp_path / "a.zarr", x)
    writers.write_pillow(tmp_path / "a.png", x)
    np.save(tmp_path / "m.npy", x)
    mapped = np.load(tmp_path / "m.npy", mmap_mode="r")
    kinds = {"a.tif": "tiff", "a.npy": "npy", "a.zarr": "zarr", "a.png": "pillow"}
    for name, kind in kinds.items():
        assert open_source(tmp_path / name).name == kind
    assert open_source(x).name == "array"
    assert open_source(torch.from_numpy(x)).name == "array"
    assert open_source(np.memmap(tmp_path / "raw", np.uint8, "w+", shape=(3, 8, 8))).name == "npy"
    reopened = pickle.loads(pickle.dumps(open_source(mapped)))  # a memory map travels by name
    assert reopened.name == "npy" and reopened.path == str(tmp_path / "m.npy")
    assert np.array_equal(reopened.array(), x)


def test_unknown_missing_and_unsupported_files_say_what_is_wrong(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="no image source reads file") as err:
        open_source(tmp_path / "notes.txt")
    for name in source_registry.names():  # every format is listed
        assert f"- {name}:" in str(err.value)
    assert supported_formats().count("\n") == len(source_registry.names()) - 1
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        open_source(tmp_path / "missing.tif")
    writers.write_tiff(tmp_path / "i16.tif", writers.oracle((1, 32, 32), "uint8").astype(np.int16),
                       levels=1)
    with pytest.raises(SourceError, match="i16.tif has dtype int16; sources must be uint8"):
        open_source(tmp_path / "i16.tif")
    with pytest.raises(SourceError, match="neither its first nor its last axis"):
        open_source(np.zeros((8, 9, 10), np.uint8), layout="auto")


def test_corrupt_and_truncated_files_are_refused_naming_them(tmp_path):
    x = writers.oracle((3, 150, 170), "uint8")
    writers.write_tiff(tmp_path / "ok.tif", x, levels=2)
    data = (tmp_path / "ok.tif").read_bytes()
    (tmp_path / "garbage.tif").write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    with pytest.raises(SourceError, match="garbage.tif"):
        open_source(tmp_path / "garbage.tif")
    # the tiles of level 0 come first in the file: cut in their middle
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 3])
    with pytest.raises(SourceError, match="cut.tif"):
        open_source(tmp_path / "cut.tif").verify()
    # a tile whose compressed bytes are damaged: the read names the file and tile
    source = open_source(tmp_path / "ok.tif")
    page = source.handle().levels[0].pages[0]
    start = int(page.dataoffsets[0])
    damaged = bytearray(data)
    damaged[start:start + 40] = bytes(40)
    (tmp_path / "damaged.tif").write_bytes(bytes(damaged))
    with pytest.raises(SourceError, match=r"damaged.tif: cannot read tile \(0, 0\) of level 0"):
        open_source(tmp_path / "damaged.tif").verify()

    np.save(tmp_path / "ok.npy", x)
    raw = (tmp_path / "ok.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SourceError, match="cut.npy"):
        open_source(tmp_path / "cut.npy")
    writers.write_pillow(tmp_path / "ok.png", x)
    png = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    with pytest.raises(SourceError, match="cut.png"):
        open_source(tmp_path / "cut.png").verify()
    (tmp_path / "bad.zarr").mkdir()
    (tmp_path / "bad.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(SourceError, match="bad.zarr"):
        open_source(tmp_path / "bad.zarr")


def _patches_in_a_child(payload: bytes) -> np.ndarray:
    """Runs in a fresh (spawned) process: unpickle the sources, read patches."""
    sources, offsets = pickle.loads(payload)
    return read_patches(sources, offsets, (40, 45)).numpy()


def test_a_worker_process_reopens_the_sources_it_receives(tmp_path):
    images = [writers.oracle((3, 150, 170), "uint16", 1), writers.oracle((3, 90, 200), "uint16", 2)]
    writers.write_tiff(tmp_path / "a.tif", images[0])
    writers.write_ngff(tmp_path / "b.zarr", images[1])
    sources = [open_source(tmp_path / "a.tif"), open_source(tmp_path / "b.zarr")]
    offsets = torch.tensor([[[-5, 160], [100, 31]], [[60, 190], [0, 0]]])
    here = read_patches(sources, offsets, (40, 45))
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        there = pool.apply(_patches_in_a_child, (pickle.dumps((sources, offsets)),))
    assert np.array_equal(there, here.numpy())
    for b, x in enumerate(images):
        assert torch.equal(here[b:b + 1], extract_patches(x[None], offsets[b:b + 1], (40, 45),
                                                          backend="reference"))
    # this process too reopens its files when its handles are gone
    close_handles()
    assert torch.equal(read_patches(sources, offsets, (40, 45)), here)


def test_openslide_reads_a_generic_tiled_tiff(tmp_path):
    pytest.importorskip("openslide", reason="OpenSlide is the optional extra ats[slides]")
    x = writers.oracle((3, 300, 420), "uint8", 5)
    levels = writers.write_tiff(tmp_path / "slide.tif", x, levels=2, tile=64)
    slide = open_source(tmp_path / "slide.tif", plugin="openslide")
    assert slide.name == "openslide" and slide.shape == x.shape
    assert slide.level_shapes == ((300, 420), (150, 210))
    assert slide.downsamples == ((1.0, 1.0), (2.0, 2.0))
    slide.verify()
    for level, lv in enumerate(levels):
        offsets = torch.tensor([[[-20, -30], [100, 200], [lv.shape[1] - 10, lv.shape[2] - 5],
                                 [200, 400], [5000, 5000]]])
        got = read_patches([slide], offsets, (64, 80), level=level)
        want = extract_patches(lv[None], offsets, (64, 80), backend="reference")
        assert torch.equal(got, want), level
    copy = pickle.loads(pickle.dumps(slide))
    assert torch.equal(read_patches([copy], offsets, (64, 80), level=1), want)
    (tmp_path / "fake.svs").write_bytes(b"not a slide at all")
    with pytest.raises(SourceError, match="fake.svs"):
        open_source(tmp_path / "fake.svs")
