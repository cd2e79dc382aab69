"""The ``tiff`` source: tiled (or stripped), pyramidal TIFF and OME-TIFF
files through tifffile.

The levels are tifffile's view of the first series (SubIFDs of OME-TIFF,
reduced-resolution pages of generic pyramids). A tile is read with one
``os.pread`` of its bytes and decoded by the page's own decoder
(``TiffPage.decode``, tifffile's chunk decoder that its zarr store uses as
well): only the tiles a patch touches are read and decoded, from any number
of threads at once, without a lock. tifffile's zarr store would do the same
through zarr's event loop, at about twice the time per tile and one loop
thread for every reader (docs/sources.md, "TIFF").

Layouts: grey ``YX``, interleaved ``YXS``, planar ``SYX`` and one page per
channel ``CYX`` (OME-TIFF); other axes (Z, T, ...) are refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ats.registry import source
from ats.sources.base import Source, SourceError

__all__ = ["TiffSource"]


class _Open:
    """A file open in this process: tifffile's parse of it and a descriptor
    for ``os.pread`` (thread-safe: no shared file position)."""

    def __init__(self, tif: Any, fd: int, levels: list["_Level"], channels: int,
                 dtype: np.dtype) -> None:
        self.tif, self.fd, self.levels, self.channels, self.dtype = tif, fd, levels, channels, dtype

    def close(self) -> None:
        os.close(self.fd)
        self.tif.close()


class _Level:
    """What reading one level needs: its pages (one per channel plane) and geometry."""

    def __init__(self, pages: list[Any], planes: int, tile: tuple[int, int], grid: tuple[int, int]):
        self.pages = pages  # one page (or frame), or one per channel (CYX)
        self.planes = planes  # separate sample planes within a page (SYX)
        self.tile = tile
        self.grid = grid


@source.register("tiff")
class TiffSource(Source):
    """A TIFF or OME-TIFF file, tiled or stripped, with its pyramid levels."""

    name = "tiff"
    formats = "TIFF / OME-TIFF (.tif, .tiff, .btf), tiled or stripped, pyramidal or not (tifffile)"
    suffixes = (".tif", ".tiff", ".btf", ".tf2", ".tf8")
    priority = 30

    def __init__(self, path: str | os.PathLike, *, series: int = 0) -> None:
        self.path = os.fspath(path)
        self.series = series
        if not Path(self.path).is_file():
            raise FileNotFoundError(f"image file not found: {self.path}")
        try:
            handle = self.handle()
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(f"cannot read {self.path} as a TIFF file: "
                              f"{type(exc).__name__}: {exc}") from exc
        shapes = [_level_shape(lv) for lv in handle.levels]
        self._set_header((handle.channels, *shapes[0]), handle.dtype, shapes,
                         [lv.tile for lv in handle.levels])

    def _open_handle(self) -> dict[str, Any]:
        import tifffile

        tif = tifffile.TiffFile(self.path)
        try:
            if self.series >= len(tif.series):
                raise SourceError(f"{self.path} has {len(tif.series)} series, not "
                                  f"{self.series + 1}")
            series = tif.series[self.series]
            levels, channels = [], None
            for level in series.levels:
                lv, c = _level(level, self.path)
                if channels not in (None, c):
                    raise SourceError(f"{self.path}: pyramid levels differ in channels")
                levels.append(lv)
                channels = c
            dtype = np.dtype(series.dtype).newbyteorder("=")
            fd = os.open(self.path, os.O_RDONLY)
        except Exception:
            tif.close()
            raise
        return _Open(tif, fd, levels, channels, dtype)

    def _read_tile(self, level: int, ty: int, tx: int) -> np.ndarray:
        h = self.handle()
        lv: _Level = h.levels[level]
        (H, W), (th, tw) = self.level_shapes[level], lv.tile
        rows, cols = min(th, H - ty * th), min(tw, W - tx * tw)
        ny, nx = lv.grid
        planes = []
        for page in lv.pages:
            for s in range(lv.planes):
                index = (s * ny + ty) * nx + tx
                planes.append(_decode(page, index, h.fd, self.path)[..., :rows, :cols, :])
        # each plane is (depth=1, rows, cols, samples): channels come from both
        tile = np.concatenate([p[0] for p in planes], axis=-1)
        return np.ascontiguousarray(np.moveaxis(tile, -1, 0), dtype=self.dtype)

    def verify(self) -> None:
        """Every tile's bytes lie inside the file, then the base check decodes
        the first and last tile of each level."""
        size = Path(self.path).stat().st_size
        for i, lv in enumerate(self.handle().levels):
            for page in lv.pages:
                ends = np.asarray(page.dataoffsets, np.int64) + np.asarray(page.databytecounts,
                                                                           np.int64)
                if ends.size and ends.max() > size:
                    missing = int((ends > size).sum())
                    raise SourceError(f"{self.path} is truncated: {missing} tile(s) of level {i} "
                                      f"end past the file's {size} bytes")
        super().verify()

    def close(self) -> None:
        """Nothing to do: handles belong to the process table (ats.sources.base)."""


def _decode(page: Any, index: int, fd: int, path: str) -> np.ndarray:
    """Chunk ``index`` of ``page`` as (depth, rows, cols, samples)."""
    offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
    data = os.pread(fd, count, offset) if count else None
    if count and len(data) != count:
        raise SourceError(f"{path} is truncated: tile {index} needs {count} bytes at {offset}")
    segment, _, shape = _keyframe(page).decode(data, index)
    if segment is None:  # a tile that was never written: the fill value, 0
        segment = np.zeros(shape, page.dtype)
    return np.asarray(segment).reshape(shape[-4:] if len(shape) >= 4 else (1, *shape))


def _level(level: Any, path: str) -> tuple[_Level, int]:
    """One tifffile series level as a :class:`_Level` and its channel count."""
    axes = level.axes.upper()
    pages = list(level.pages)  # pages or frames: frames hold their own tile offsets
    if axes in ("YX", "YXS", "SYX"):
        pages = pages[:1]
    elif axes != "CYX":
        raise SourceError(f"{path}: axes {level.axes!r} are not a 2-D image; expected YX, "
                          "YXS, SYX or CYX")
    page = _keyframe(pages[0])
    separate, depth, H, W, contig = page.shaped
    if depth != 1:
        raise SourceError(f"{path}: volumetric pages (depth {depth}) are not supported")
    tile = (page.tilelength, page.tilewidth) if page.is_tiled else (page.rowsperstrip or H, W)
    tile = (min(tile[0], H), min(tile[1], W))
    grid = (-(-H // tile[0]), -(-W // tile[1]))
    if len(page.dataoffsets) != separate * grid[0] * grid[1]:
        raise SourceError(f"{path}: {len(page.dataoffsets)} tiles listed, expected "
                          f"{separate * grid[0] * grid[1]}")
    return _Level(pages, separate, tile, grid), len(pages) * separate * contig


def _keyframe(page: Any) -> Any:
    """The page whose tags describe ``page`` (itself, or a frame's keyframe):
    its decoder serves every page of the same layout."""
    return getattr(page, "keyframe", None) or page


def _level_shape(lv: _Level) -> tuple[int, int]:
    return tuple(_keyframe(lv.pages[0]).shaped[2:4])  # type: ignore[return-value]
