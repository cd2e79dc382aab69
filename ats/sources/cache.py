"""The decoded-tile cache: a byte-bounded LRU table, one per process.

Decoding a compressed tile costs far more than copying it, and the patches
of a batch (and of the next epochs) often touch the same tiles. The cache
keeps decoded tiles up to a number of bytes, dropping the least recently
used first. It is per process on purpose: DataLoader workers do not share
memory, and a forked child starts with an empty one (docs/sources.md).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

__all__ = ["TileCache", "default_cache", "CACHE_ENV", "DEFAULT_CACHE_BYTES"]

#: environment variable: the default cache's size in MiB
CACHE_ENV = "ATS_TILE_CACHE_MB"
DEFAULT_CACHE_BYTES = 512 << 20


class TileCache:
    """Decoded tiles by key, at most ``max_bytes`` of them (LRU); thread-safe.

    Args:
        max_bytes: the bound on the bytes of the tiles kept (0 keeps none).
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._tiles: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> np.ndarray | None:
        """The tile under ``key`` (now the most recently used), or None."""
        with self._lock:
            tile = self._tiles.get(key)
            if tile is None:
                self.misses += 1
                return None
            self._tiles.move_to_end(key)
            self.hits += 1
            return tile

    def put(self, key: Hashable, tile: np.ndarray) -> None:
        """Keep ``tile`` (read-only from now on); a tile larger than the whole
        cache is not kept."""
        if tile.nbytes > self.max_bytes:
            return
        tile.flags.writeable = False  # shared by every later reader
        with self._lock:
            old = self._tiles.pop(key, None)
            if old is not None:
                self.bytes -= old.nbytes
            self._tiles[key] = tile
            self.bytes += tile.nbytes
            while self.bytes > self.max_bytes:
                self.bytes -= self._tiles.popitem(last=False)[1].nbytes

    def clear(self) -> None:
        with self._lock:
            self._tiles.clear()
            self.bytes = 0
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._tiles)

    def __repr__(self) -> str:
        return (f"TileCache({len(self)} tiles, {self.bytes >> 20} of {self.max_bytes >> 20} MiB, "
                f"{self.hits} hits, {self.misses} misses)")


_default: TileCache | None = None
_default_pid = -1
_default_lock = threading.Lock()


def default_cache() -> TileCache:
    """This process's cache, of ``$ATS_TILE_CACHE_MB`` MiB (default 512)."""
    global _default, _default_pid
    with _default_lock:
        if _default is None or _default_pid != os.getpid():
            _default = TileCache(_cache_bytes())
            _default_pid = os.getpid()
        return _default


def _cache_bytes() -> int:
    text = os.environ.get(CACHE_ENV)
    if text is None:
        return DEFAULT_CACHE_BYTES
    try:
        mib = int(text)
        if mib < 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"${CACHE_ENV} must be a whole number of MiB >= 0, got {text!r}") from None
    return mib << 20
