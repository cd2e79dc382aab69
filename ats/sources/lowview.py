"""Low views without the full image (docs/sources.md, "Low views").

A low view of ``(h, w)`` pixels is made from the pyramid level nearest the
wanted scale that still has at least its resolution, and resized the rest
of the way by *area* averaging: each low pixel is the mean of the level's
pixels it covers, fractions of pixels weighted by the fraction covered (an
exact box filter, as OpenCV's ``INTER_AREA``; no aliasing of thin strokes).
The average is accumulated tile by tile, ``low += W_y · tile · W_xᵀ`` with
the small weight matrices of the tile's rows and columns, so a file without
a pyramid is streamed once and memory holds the low view and a few tiles,
never the image.

Low views are cached on disk (:class:`LowViewCache`), keyed by the file's
identity (path, size, modification time) and the size, so the second epoch
reads nothing but patches.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ats.core.extract import float_scale
from ats.sources.base import Source, release_mapped_pages
from ats.sources.cache import TileCache
from ats.sources.read import fetch_tiles

__all__ = ["CACHE_DIR_ENV", "LowViewCache", "area_weights", "choose_level", "fit_size",
           "low_view", "default_cache_dir"]

#: environment variable: the folder of ats's on-disk caches
CACHE_DIR_ENV = "ATS_CACHE_DIR"
#: bumped whenever the way low views are made changes (old cache entries are ignored)
VERSION = 1
#: side of the blocks an in-place array is averaged by
BLOCK = 1024


def fit_size(shape: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """``(h, w)`` of an image of ``shape`` (H, W) resized to fit in ``box``
    with its aspect kept: ``round(H s), round(W s)``, ``s = min(bh/H, bw/W)``,
    each at least 1."""
    s = min(box[0] / shape[0], box[1] / shape[1])
    return max(1, min(box[0], round(shape[0] * s))), max(1, min(box[1], round(shape[1] * s)))


def choose_level(source: Source, size: tuple[int, int]) -> int:
    """The coarsest level with at least the resolution of a ``size`` view."""
    H, W = source.shape[1:]
    want = (H / size[0], W / size[1])
    best = 0
    for level, (fy, fx) in enumerate(source.downsamples):  # finest first
        if fy <= want[0] * (1 + 1e-9) and fx <= want[1] * (1 + 1e-9):
            best = level
    return best


def area_weights(n_in: int, n_out: int, start: int, stop: int) -> tuple[int, np.ndarray]:
    """Area weights of input pixels ``[start, stop)`` on the output pixels.

    Input pixel i covers ``[i, i+1) · n_out / n_in`` in output pixels; its
    weight on output pixel j is the overlap with ``[j, j+1)``, so the
    weights of every output pixel sum to 1.

    Returns:
        ``(j0, W)``: the first output pixel touched and ``W`` (J, stop - start).
    """
    r = n_out / n_in
    i = np.arange(start, stop, dtype=np.float64)
    lo, hi = i * r, (i + 1) * r
    j0, j1 = int(np.floor(lo[0])), min(int(np.ceil(hi[-1])), n_out)
    j = np.arange(j0, j1, dtype=np.float64)[:, None]
    weights = np.clip(np.minimum(hi[None, :], j + 1) - np.maximum(lo[None, :], j), 0, None)
    return j0, weights


def low_view(source: Source, size: tuple[int, int], *, cache: "LowViewCache | None" = None,
             threads: int | None = None) -> np.ndarray:
    """The ``(C, h, w)`` float32 low view of ``source`` on the [0, 1] scale
    (integers divided by their maximum), from ``cache`` when it has it."""
    size = (int(size[0]), int(size[1]))
    if min(size) < 1:
        raise ValueError(f"a low view needs a positive size, got {size}")
    if cache is not None:
        found = cache.load(source, size)
        if found is not None:
            return found
    level = choose_level(source, size)
    Hl, Wl = source.level_shapes[level]
    acc = np.zeros((source.channels, *size), np.float64)
    for y0, x0, block in _blocks(source, level, threads):
        jy, wy = area_weights(Hl, size[0], y0, y0 + block.shape[1])
        jx, wx = area_weights(Wl, size[1], x0, x0 + block.shape[2])
        part = np.matmul(np.matmul(wy, block.astype(np.float64)), wx.T)
        acc[:, jy:jy + wy.shape[0], jx:jx + wx.shape[0]] += part
    view = (acc * float_scale(source.dtype)).astype(np.float32)
    if cache is not None:
        cache.save(source, size, view)
    return view


def _blocks(source: Source, level: int, threads: int | None
            ) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(y0, x0, block)`` pieces covering the level once: slices of an
    in-place array, else its tiles, a row of tiles decoded at a time (in
    parallel, bypassing the tile cache: a stream reads each tile once)."""
    array = source.array(level)
    H, W = source.level_shapes[level]
    if array is not None:
        for y0 in range(0, H, BLOCK):
            for x0 in range(0, W, BLOCK):
                yield y0, x0, array[:, y0:y0 + BLOCK, x0:x0 + BLOCK]
            release_mapped_pages(array)  # streaming a memory map must not keep it resident
        return
    (th, tw), (ny, nx) = source.tile_shapes[level], source.tile_grid(level)
    no_cache = TileCache(0)
    for ty in range(ny):
        row = fetch_tiles([(source, level, ty, tx) for tx in range(nx)], no_cache, threads)
        for tx, tile in enumerate(row):
            yield ty * th, tx * tw, tile


def default_cache_dir() -> Path:
    """``$ATS_CACHE_DIR``, else ``$XDG_CACHE_HOME/ats``, else ``~/.cache/ats``."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ats"


class LowViewCache:
    """Low views on disk, one ``.npy`` per (file identity, size).

    Args:
        folder: where to keep them (default: ``default_cache_dir() / "lowviews"``).

    Sources without a file identity (in memory) are never cached. Files are
    written atomically (a temporary file renamed into place), so DataLoader
    workers making the same view at once cannot leave a broken one.
    """

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_cache_dir() / "lowviews"
        self.hits = self.misses = 0

    def path(self, source: Source, size: tuple[int, int]) -> Path | None:
        ident = source.identity()
        if ident is None:
            return None
        digest = hashlib.sha256(repr((VERSION, ident, tuple(size))).encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.npy"

    def load(self, source: Source, size: tuple[int, int]) -> np.ndarray | None:
        path = self.path(source, size)
        if path is None or not path.is_file():
            self.misses += 1
            return None
        try:
            view = np.load(path)
        except (OSError, ValueError):  # a damaged entry is made again
            self.misses += 1
            return None
        if view.shape != (source.channels, *size) or view.dtype != np.float32:
            self.misses += 1
            return None
        self.hits += 1
        return view

    def save(self, source: Source, size: tuple[int, int], view: np.ndarray) -> None:
        path = self.path(source, size)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, view)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
