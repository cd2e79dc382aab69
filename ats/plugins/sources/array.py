"""Array sources: numpy arrays and CPU tensors in memory (``array``), memory
maps and ``.npy`` files (``npy``).

A channels-first array (or a grey 2-D one) is read in place by the numba
extractor, without tiles; a channels-last ``.npy`` file is read by tiles of
:data:`TILE` pixels (each a small transposed copy), so that a memory map far
larger than RAM is never copied whole. A pickled ``npy`` source carries the
file name only; an ``array`` source carries its data (use ``npy`` for large
arrays that must reach DataLoader workers).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ats.registry import source
from ats.sources.base import Source, SourceError, file_identity

__all__ = ["ArraySource", "NpySource", "TILE", "chw_layout"]

#: tile side for arrays read by tiles (channels-last memory maps)
TILE = 512

Layout = Literal["auto", "CHW", "HWC"]


def chw_layout(shape: tuple[int, ...], layout: Layout, what: str) -> str:
    """``"CHW"`` or ``"HWC"`` for an array of ``shape``; a 2-D array is grey
    ``"HW"``. ``"auto"``: channels first when the first axis is at most 4
    long, else channels last when the last one is."""
    if len(shape) == 2:
        return "HW"
    if len(shape) != 3:
        raise SourceError(f"{what} must be (H, W), (C, H, W) or (H, W, C), got shape {shape}")
    if layout in ("CHW", "HWC"):
        return layout
    if layout != "auto":
        raise ValueError(f"layout must be 'auto', 'CHW' or 'HWC', got {layout!r}")
    if shape[0] <= 4:
        return "CHW"
    if shape[2] <= 4:
        return "HWC"
    raise SourceError(f"{what} has shape {shape}: neither its first nor its last axis looks "
                      "like channels (<= 4); pass layout='CHW' or 'HWC'")


class _Arrayed(Source):
    """An array seen as (C, H, W): in place when channels first, by tiles if not."""

    layout: str

    def _header_of(self, shape: tuple[int, ...], dtype: Any, layout: Layout) -> None:
        self.layout = chw_layout(tuple(shape), layout, self.describe())
        if self.layout == "HW":
            chw = (1, *shape)
        elif self.layout == "CHW":
            chw = tuple(shape)
        else:
            chw = (shape[2], shape[0], shape[1])
        tile = (chw[1], chw[2]) if self.layout != "HWC" else (min(TILE, chw[1]), min(TILE, chw[2]))
        self._set_header(chw, dtype, [chw[1:]], [tile])

    def _data(self) -> np.ndarray:
        raise NotImplementedError

    def array(self, level: int = 0) -> np.ndarray | None:
        if self.layout == "HWC":
            return None
        data = self._data()
        return data[None] if self.layout == "HW" else data

    def _read_tile(self, level: int, ty: int, tx: int) -> np.ndarray:
        th, tw = self.tile_shapes[0]
        region = self._data()[ty * th:(ty + 1) * th, tx * tw:(tx + 1) * tw]
        return np.ascontiguousarray(np.moveaxis(region, -1, 0))


@source.register("array")
class ArraySource(_Arrayed):
    """A numpy array or CPU tensor in memory, (H, W), (C, H, W) or (H, W, C)."""

    name = "array"
    formats = "numpy arrays and CPU tensors in memory, (H, W), (C, H, W) or (H, W, C)"
    priority = 10

    def __init__(self, data: np.ndarray | torch.Tensor, *, layout: Layout = "CHW") -> None:
        if isinstance(data, torch.Tensor):
            if data.device.type != "cpu":
                raise ValueError(f"an array source reads host memory; the tensor is on "
                                 f"{data.device} (move it with .cpu())")
            data = data.detach().numpy()
        if not isinstance(data, np.ndarray):
            raise TypeError(f"an array source needs a numpy array or tensor, got "
                            f"{type(data).__name__}")
        self._header_of(data.shape, data.dtype, layout)
        # One copy at most, to make an in-place read possible.
        self._array = data if self.layout == "HWC" else np.ascontiguousarray(data, self.dtype)

    @classmethod
    def accepts(cls, obj: Any) -> bool:
        return isinstance(obj, (np.ndarray, torch.Tensor)) and not _is_file_map(obj)

    def _data(self) -> np.ndarray:
        return self._array

    def verify(self) -> None:
        """In memory: nothing can be truncated."""


@source.register("npy")
class NpySource(_Arrayed):
    """A ``.npy`` file or a ``np.memmap`` of a whole file, memory-mapped read-only."""

    name = "npy"
    formats = ".npy files and np.memmap arrays (memory-mapped, read in place)"
    suffixes = (".npy",)
    priority = 20

    def __init__(self, obj: str | os.PathLike | np.memmap, *, layout: Layout = "auto") -> None:
        if isinstance(obj, np.memmap):
            self._map = (str(obj.filename), obj.dtype.str, tuple(obj.shape), int(obj.offset),
                         "F" if obj.flags.f_contiguous and not obj.flags.c_contiguous else "C")
            self.path = str(obj.filename)
            shape, dtype = tuple(obj.shape), obj.dtype
        else:
            self._map = None
            self.path = os.fspath(obj)
            if not Path(self.path).is_file():
                raise FileNotFoundError(f"image file not found: {self.path}")
            try:
                arr = np.load(self.path, mmap_mode="r")
            except Exception as exc:  # numpy raises several types for broken headers
                raise SourceError(f"cannot read {self.path} as a .npy file: {exc}") from exc
            shape, dtype = tuple(arr.shape), arr.dtype
        if dtype.byteorder == ">" or (len(shape) == 3 and self._map and self._map[4] == "F"):
            raise SourceError(f"{self.describe()}: big-endian or Fortran-ordered arrays are not "
                              "supported; save it with np.save of a C-ordered native array")
        self._header_of(shape, dtype, layout)

    @classmethod
    def accepts(cls, obj: Any) -> bool:
        return _is_file_map(obj) or super().accepts(obj)

    def _open_handle(self) -> np.ndarray:
        if self._map is None:
            return np.load(self.path, mmap_mode="r")
        path, dtype, shape, offset, order = self._map
        return np.memmap(path, dtype=np.dtype(dtype), mode="r", shape=shape, offset=offset,
                         order=order)

    def _data(self) -> np.ndarray:
        return np.asarray(self.handle())

    def identity(self) -> tuple:
        return (self.name, *file_identity(self.path), self._map and self._map[3])

    def verify(self) -> None:
        """The file holds every byte the header promises (a truncated file
        fails to map)."""
        try:
            self._open_handle()
        except (ValueError, OSError) as exc:
            raise SourceError(f"{self.describe()} is truncated or unreadable: {exc}") from exc


def _is_file_map(obj: Any) -> bool:
    """A memory map of a whole file (not a view of one, whose offset numpy
    does not record): it can be reopened by name in another process."""
    import mmap

    return isinstance(obj, np.memmap) and isinstance(obj.base, mmap.mmap) and \
        obj.filename is not None
