"""Writing images larger than memory, tile by tile.

:func:`write_tiff_pyramid` writes a tiled, compressed TIFF whose pages are
the pyramid levels (level 0, then each half the size, marked as reduced
images): the layout tifffile reads as one pyramid and OpenSlide opens as a
generic tiled TIFF. :func:`write_npy` writes an uncompressed ``.npy`` band by
band. Both ask a ``render(level, y, x, h, w)`` function for each piece, so
no whole image is ever held.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

__all__ = ["Render", "pyramid_shapes", "write_tiff_pyramid", "write_npy"]

#: render(level, y, x, h, w) -> (h, w) or (h, w, C) array of that level's pixels
Render = Callable[[int, int, int, int, int], np.ndarray]


def pyramid_shapes(shape: tuple[int, int], smallest: int = 512) -> list[tuple[int, int]]:
    """Level shapes: ``shape``, then halved (rounding up) while the larger
    side of the last level is above ``smallest``."""
    shapes = [tuple(shape)]
    while max(shapes[-1]) > smallest:
        h, w = shapes[-1]
        shapes.append((-(-h // 2), -(-w // 2)))
    return shapes  # type: ignore[return-value]


def write_tiff_pyramid(path: str | os.PathLike, shape: tuple[int, int], channels: int,
                       dtype: np.dtype | type, render: Render, *, tile: int = 256,
                       compression: str | None = "zlib", smallest: int = 512) -> list[tuple[int, int]]:
    """Write a tiled pyramidal TIFF of ``shape`` (H, W) one tile at a time.

    Args:
        channels: 1 (grey) or 3 (RGB, interleaved).
        render: the pixels of a region of a level (see :data:`Render`).
        tile: tile side in pixels (a multiple of 16, as TIFF requires).
        compression: a tifffile compression (``"zlib"``, ``None``, ...).
        smallest: levels are halved down to this size of their larger side.

    Returns:
        the level shapes written.
    """
    import tifffile

    if tile % 16:
        raise ValueError(f"tile must be a multiple of 16, got {tile}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    shapes = pyramid_shapes(shape, smallest)
    extra = {"photometric": "rgb"} if channels == 3 else {"photometric": "minisblack"}
    tmp = Path(f"{os.fspath(path)}.part")
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for level, (h, w) in enumerate(shapes):
            full = (h, w, channels) if channels == 3 else (h, w)
            tif.write(_tiles(render, level, h, w, tile, channels, dtype), shape=full,
                      dtype=dtype, tile=(tile, tile), compression=compression,
                      subfiletype=1 if level else 0, **extra)
    os.replace(tmp, path)  # never a half-written file under the final name
    return shapes


def _tiles(render: Render, level: int, h: int, w: int, tile: int, channels: int,
           dtype: np.dtype | type) -> Iterator[np.ndarray]:
    """The level's tiles in row-major order, edge tiles zero-padded to full size."""
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            part = np.asarray(render(level, y, x, min(tile, h - y), min(tile, w - x)), dtype)
            if part.shape[:2] != (tile, tile):
                padded = np.zeros((tile, tile, *part.shape[2:]), dtype)
                padded[:part.shape[0], :part.shape[1]] = part
                part = padded
            yield part if channels == 3 else part.reshape(tile, tile)


def write_npy(path: str | os.PathLike, shape: tuple[int, int], channels: int,
              dtype: np.dtype | type, render: Render, *, band: int = 1024) -> None:
    """Write an uncompressed ``.npy`` of (H, W) or (C, H, W) in bands of rows
    (through a memory map: only a band is in memory)."""
    h, w = shape
    full = (h, w) if channels == 1 else (channels, h, w)
    tmp = Path(f"{os.fspath(path)}.part")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=full)
    for y in range(0, h, band):
        rows = np.asarray(render(0, y, 0, min(band, h - y), w), dtype)
        if channels == 1:
            out[y:y + rows.shape[0]] = rows
        else:
            out[:, y:y + rows.shape[0]] = np.moveaxis(rows, -1, 0)
    out.flush()
    del out
    os.replace(tmp, path)
