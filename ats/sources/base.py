"""The :class:`Source`: an opened image that reads regions lazily.

A source knows its shape ``(C, H, W)``, its dtype, its pyramid levels (the
full resolution is level 0) with their downsample factors, and reads one
*tile* of a level at a time: the unit its file stores and decodes (a TIFF
tile, a zarr chunk, a band of an array). Patch extraction
(:mod:`ats.sources.read`) and low views (:mod:`ats.sources.lowview`) are built
on tiles only, so peak memory depends on the tiles a patch touches, never on
the image (docs/sources.md).

Sources are picklable handles: the header facts (shape, dtype, levels) travel
with the object, the open file does not. Each process opens a file on its
first read and keeps it in a small per-process table of open handles
(:func:`handle`), so a DataLoader worker and the main process each have their
own, and a batch of unpickled sources reuses the handles opened before.
"""

from __future__ import annotations

import mmap
import os
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

__all__ = ["Source", "SourceError", "SUPPORTED_DTYPES", "file_identity", "handle", "close_handles",
           "release_mapped_pages"]

#: the dtypes extraction reads (those of ats.core.extract); others are refused at open
SUPPORTED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32),
                    np.dtype(np.float64))


class SourceError(ValueError):
    """A file that cannot serve as an image source: unreadable, truncated,
    an unsupported layout or dtype. The message names the file."""


class Source:
    """Base class of the image sources (registered in :data:`ats.registry.source`).

    Subclasses set :attr:`name`, :attr:`formats` (one line for error messages
    and ``ats-plugins``), optionally :attr:`suffixes` and :attr:`priority`, and
    implement :meth:`accepts`, ``__init__`` (which must call :meth:`_set_header`)
    and :meth:`_read_tile`; an array-backed source also :meth:`array`.

    Attributes:
        shape: ``(C, H, W)`` of level 0.
        dtype: one of :data:`SUPPORTED_DTYPES`.
        level_shapes: ``(H_l, W_l)`` of every level, level 0 first, decreasing.
        tile_shapes: ``(th, tw)`` of every level's tiles (the last row and
            column of tiles may be smaller: tiles are trimmed to the image).
        path: the file, or None for in-memory data.
    """

    name: ClassVar[str] = "source"
    formats: ClassVar[str] = ""
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: lower is tried first by :func:`ats.sources.open_source`
    priority: ClassVar[int] = 100

    shape: tuple[int, int, int]
    dtype: np.dtype
    level_shapes: tuple[tuple[int, int], ...]
    tile_shapes: tuple[tuple[int, int], ...]
    path: str | None = None

    # -- what a plugin implements ------------------------------------------------
    @classmethod
    def accepts(cls, obj: Any) -> bool:
        """Whether this plugin can open ``obj`` (cheap: a type or a file suffix)."""
        return isinstance(obj, (str, os.PathLike)) and _suffix_in(obj, cls.suffixes)

    def _read_tile(self, level: int, ty: int, tx: int) -> np.ndarray:
        """Tile ``(ty, tx)`` of ``level``: a C-contiguous ``(C, h, w)`` array of
        :attr:`dtype`, trimmed to the image. Called from several threads."""
        raise NotImplementedError

    def array(self, level: int = 0) -> np.ndarray | None:
        """The whole level as a C-contiguous ``(C, H, W)`` array read in place
        (memory or a memory map), or None when it must be read by tiles."""
        return None

    def _open_handle(self) -> Any:
        """Open the file (called once per process, see :func:`handle`)."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------
    def _set_header(self, shape: tuple[int, ...], dtype: Any,
                    level_shapes: list[tuple[int, int]], tile_shapes: list[tuple[int, int]]) -> None:
        """Record (and check) the header facts; raises :class:`SourceError`."""
        dtype = np.dtype(dtype)
        if dtype not in SUPPORTED_DTYPES:
            raise SourceError(f"{self.describe()} has dtype {dtype}; sources must be uint8, "
                              "uint16, float32 or float64")
        if len(shape) != 3 or min(shape) < 1:
            raise SourceError(f"{self.describe()} must be one 2-D image (C, H, W) with C, H, "
                              f"W >= 1, got shape {tuple(shape)}")
        self.shape = (int(shape[0]), int(shape[1]), int(shape[2]))
        self.dtype = dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype
        self.level_shapes = tuple((int(h), int(w)) for h, w in level_shapes)
        self.tile_shapes = tuple((int(h), int(w)) for h, w in tile_shapes)
        if self.level_shapes[0] != self.shape[1:] or len(self.tile_shapes) != len(self.level_shapes):
            raise SourceError(f"{self.describe()}: inconsistent levels {self.level_shapes}")

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def levels(self) -> int:
        return len(self.level_shapes)

    @property
    def downsamples(self) -> tuple[tuple[float, float], ...]:
        """``(H / H_l, W / W_l)`` of every level (level 0: ``(1.0, 1.0)``)."""
        H, W = self.shape[1:]
        return tuple((H / h, W / w) for h, w in self.level_shapes)

    def tile_grid(self, level: int) -> tuple[int, int]:
        """Tiles per column and per row of ``level``."""
        (h, w), (th, tw) = self.level_shapes[level], self.tile_shapes[level]
        return -(-h // th), -(-w // tw)

    def read_tile(self, level: int, ty: int, tx: int) -> np.ndarray:
        """Tile ``(ty, tx)`` of ``level`` (see :meth:`_read_tile`), checked."""
        ny, nx = self.tile_grid(level)
        if not (0 <= level < self.levels and 0 <= ty < ny and 0 <= tx < nx):
            raise IndexError(f"tile ({level}, {ty}, {tx}) is outside {self.describe()} "
                             f"({self.levels} levels, level {level} grid {ny}x{nx})")
        try:
            tile = self._read_tile(level, ty, tx)
        except (SourceError, ImportError):
            raise
        except Exception as exc:  # a decoder's error, named with the file and tile
            raise SourceError(f"{self.describe()}: cannot read tile ({ty}, {tx}) of level "
                              f"{level}: {type(exc).__name__}: {exc}") from exc
        (h, w), (th, tw) = self.level_shapes[level], self.tile_shapes[level]
        expected = (self.shape[0], min(th, h - ty * th), min(tw, w - tx * tw))
        if tile.shape != expected or tile.dtype != self.dtype:
            raise SourceError(f"{self.describe()}: tile ({level}, {ty}, {tx}) decoded as "
                              f"{tile.dtype} {tile.shape}, expected {self.dtype} {expected}")
        return np.ascontiguousarray(tile)

    @property
    def key(self) -> str:
        """Names the pixels for the tile cache and the handle table: equal
        keys, equal tiles. Taken once, from the file as it was first seen (a
        lookup per tile must not cost a ``stat``), and pickled with the source."""
        key = self.__dict__.get("_key")
        if key is None:
            ident = self.identity()
            # in memory: a name of its own, shared by its pickled copies only
            key = self._key = repr(ident) if ident is not None else f"memory:{uuid.uuid4().hex}"
        return key

    def identity(self) -> tuple | None:
        """The file's identity (name, path, size, modification time) for the
        on-disk low-view cache; None for in-memory data (never cached on disk)."""
        return None if self.path is None else (self.name, *file_identity(self.path))

    def verify(self) -> None:
        """Read the first and last tile of every level: a truncated or corrupt
        file raises :class:`SourceError` here rather than during training."""
        for level in range(self.levels):
            ny, nx = self.tile_grid(level)
            for ty, tx in sorted({(0, 0), (ny - 1, nx - 1)}):
                self.read_tile(level, ty, tx)

    def handle(self) -> Any:
        """This process's open handle of the file (opened on first use)."""
        return handle(self.key, self._open_handle)

    def describe(self) -> str:
        return f"{self.name} source {self.path}" if self.path else f"{self.name} source"

    def __getstate__(self) -> dict:
        # Header facts travel; decoded data and handles are per process.
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_cached")}

    def __repr__(self) -> str:
        C, H, W = self.shape
        where = f" {self.path}" if self.path else ""
        return (f"{type(self).__name__}({C}x{H}x{W} {self.dtype}, {self.levels} level(s), "
                f"tiles {self.tile_shapes[0][0]}x{self.tile_shapes[0][1]}{where})")


def file_identity(path: str | os.PathLike) -> tuple[str, int, int]:
    """``(resolved path, size, mtime in ns)``: changes when the file is replaced."""
    p = Path(path).resolve()
    st = p.stat()
    return str(p), int(st.st_size), int(st.st_mtime_ns)


def _suffix_in(path: str | os.PathLike, suffixes: tuple[str, ...]) -> bool:
    name = os.fspath(path).lower().rstrip("/\\")
    return any(name.endswith(s) for s in suffixes)


def release_mapped_pages(array: np.ndarray) -> None:
    """Unmap the pages this process touched in a memory-mapped ``array`` (they
    stay in the OS page cache, and come back on the next read): the resident
    set then holds what is being read, not every page ever read. A no-op
    for arrays in memory."""
    base: Any = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    if base is not None and not base.closed:
        base.madvise(mmap.MADV_DONTNEED)


# -- open handles, per process ------------------------------------------------------

#: open handles kept per process (least recently used closed first)
MAX_HANDLES = 64
_handles: OrderedDict[str, Any] = OrderedDict()
_handles_pid = os.getpid()
_handles_lock = threading.Lock()


def handle(key: str, opener: Callable[[], Any]) -> Any:
    """The handle for ``key`` in this process, opened by ``opener`` on first use.

    A forked child starts with an empty table (never sharing the parent's
    file positions); the oldest handle is closed past :data:`MAX_HANDLES`.
    """
    global _handles_pid
    with _handles_lock:
        if _handles_pid != os.getpid():
            _handles.clear()  # the parent's handles are not ours to use or close
            _handles_pid = os.getpid()
        found = _handles.get(key)
        if found is not None:
            _handles.move_to_end(key)
            return found
    opened = opener()  # outside the lock: opening may be slow
    with _handles_lock:
        if key in _handles:  # another thread opened it meanwhile
            _close(opened)
            return _handles[key]
        _handles[key] = opened
        while len(_handles) > MAX_HANDLES:
            _close(_handles.popitem(last=False)[1])
        return opened


def close_handles() -> None:
    """Close every handle this process holds."""
    with _handles_lock:
        while _handles:
            _close(_handles.popitem()[1])


def _close(obj: Any) -> None:
    close = getattr(obj, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # closing a broken file must not hide the real error
            pass
