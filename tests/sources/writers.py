"""Small image files of every source format, written by the tests themselves
from an in-memory oracle ``(C, H, W)`` array (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["oracle", "halve", "write_tiff", "write_ome_tiff", "write_zarr", "write_ngff",
           "write_npy", "write_pillow", "FORMATS"]


def oracle(shape: tuple[int, int, int], dtype, seed: int = 0) -> np.ndarray:
    """Random pixels of ``dtype`` covering its range (floats in [0, 1))."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.random(shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)


def halve(x: np.ndarray) -> np.ndarray:
    """A coarser pyramid level: every second pixel (C, H, W)."""
    return np.ascontiguousarray(x[:, ::2, ::2])


def _hwc(x: np.ndarray) -> np.ndarray:
    return x[0] if x.shape[0] == 1 else np.ascontiguousarray(x.transpose(1, 2, 0))


def write_tiff(path: Path, x: np.ndarray, *, levels: int = 2, tile: int | None = 32,
               compression: str | None = "zlib", planar: bool = False,
               rowsperstrip: int | None = None) -> list[np.ndarray]:
    """A generic pyramid: level 0 then reduced pages; returns the levels written."""
    import tifffile

    written = [x]
    for _ in range(levels - 1):
        written.append(halve(written[-1]))
    rgb = x.shape[0] == 3
    with tifffile.TiffWriter(path) as tif:
        for i, lv in enumerate(written):
            data = lv if (planar or not rgb) and lv.shape[0] != 1 else _hwc(lv)
            extra = {"tile": (tile, tile)} if tile else {"rowsperstrip": rowsperstrip}
            tif.write(data, compression=compression, subfiletype=1 if i else 0,
                      photometric="rgb" if rgb else "minisblack",
                      planarconfig="separate" if planar else None, **extra)
    return written


def write_ome_tiff(path: Path, x: np.ndarray, *, levels: int = 2, tile: int = 32) -> list[np.ndarray]:
    """An OME-TIFF pyramid in SubIFDs, channels as pages (CYX)."""
    import tifffile

    written = [x]
    for _ in range(levels - 1):
        written.append(halve(written[-1]))
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(x, subifds=levels - 1, tile=(tile, tile), compression="zlib",
                  photometric="minisblack", metadata={"axes": "CYX"})
        for lv in written[1:]:
            tif.write(lv, subfiletype=1, tile=(tile, tile), compression="zlib",
                      photometric="minisblack")
    return written


def write_zarr(path: Path, x: np.ndarray, *, chunks: int = 32, zarr_format: int = 3) -> None:
    """A plain (C, H, W) zarr array."""
    import zarr

    arr = zarr.create_array(store=str(path), shape=x.shape, dtype=x.dtype,
                            chunks=(x.shape[0], chunks, chunks), zarr_format=zarr_format)
    arr[:] = x


def write_ngff(path: Path, x: np.ndarray, *, levels: int = 2, chunks: int = 32,
               version: str = "0.4") -> list[np.ndarray]:
    """An OME-NGFF multiscale group: levels "0", "1", ... with (t, c, y, x)
    axes (a length-1 time axis, which the source must drop)."""
    import zarr

    written = [x]
    for _ in range(levels - 1):
        written.append(halve(written[-1]))
    fmt = 2 if version == "0.4" else 3
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    for i, lv in enumerate(written):
        arr = group.create_array(str(i), shape=(1, *lv.shape), dtype=lv.dtype,
                                 chunks=(1, lv.shape[0], chunks, chunks))
        arr[:] = lv[None]
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"},
            {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    scales = [{"version": version, "axes": axes,
               "datasets": [{"path": str(i), "coordinateTransformations": [
                   {"type": "scale", "scale": [1, 1, 2.0 ** i, 2.0 ** i]}]}
                   for i in range(levels)]}]
    if version == "0.4":
        group.attrs["multiscales"] = scales
    else:
        group.attrs["ome"] = {"version": version, "multiscales": scales}
    return written


def write_npy(path: Path, x: np.ndarray, *, channels_last: bool = False) -> None:
    np.save(path, _hwc(x) if channels_last else x)


def write_pillow(path: Path, x: np.ndarray) -> np.ndarray:
    """A PNG/BMP/JPEG file of ``x``; returns what the file holds (JPEG is lossy)."""
    from PIL import Image

    data = _hwc(x)
    img = Image.fromarray(data)  # uint16 grey becomes mode I;16
    img.save(path)
    with Image.open(path) as back:
        held = np.asarray(back)
    held = held.astype(x.dtype)
    return held[None] if held.ndim == 2 else held.transpose(2, 0, 1)


#: format name -> dtypes the format holds (and the sources read)
FORMATS = {
    "tiff": ("uint8", "uint16", "float32", "float64"),
    "ome_tiff": ("uint8", "uint16", "float32", "float64"),
    "zarr": ("uint8", "uint16", "float32", "float64"),
    "ngff": ("uint8", "uint16", "float32", "float64"),
    "npy": ("uint8", "uint16", "float32", "float64"),
    "png": ("uint8", "uint16"),
}
