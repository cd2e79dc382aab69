"""Patches out of a batch of sources: :func:`read_patches`.

The semantics are those of :func:`ats.core.extract.extract_patches` (top-left
offsets, any offset legal, zeros outside, ``as_float`` scaling), for a batch
whose images are :class:`~ats.sources.Source` objects of their own sizes
(docs/sources.md, "Reading patches"):

* an array-backed source (in memory, a memory map) is read in place by the
  ``numba`` extractor, as a tensor would be;
* any other source is read by tiles: the tiles the patches touch are listed
  (and only those), looked up in the decoded-tile cache, the missing ones
  decoded in parallel threads (decoders release the GIL), and a numba kernel
  copies each patch row segment by segment out of them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ats.core.extract import extract_patches, float_scale
from ats.core.geometry import as_patch_size
from ats.sources.base import Source, release_mapped_pages
from ats.sources.cache import TileCache, default_cache

__all__ = ["read_patches", "fetch_tiles", "tile_plan"]


def read_patches(sources: Sequence[Source], offsets: torch.Tensor | np.ndarray,
                 patch_size: int | Sequence[int], *, level: int = 0, as_float: bool = False,
                 out: torch.Tensor | None = None, cache: TileCache | None = None,
                 threads: int | None = None) -> torch.Tensor:
    """Patches ``(B, N, C, ph, pw)`` of ``sources`` at integer ``offsets``.

    Args:
        sources: B sources with the same channels and dtype (any sizes).
        offsets: ``(B, N, 2)`` integer top-left corners in ``level`` pixels of
            each item's own image; any value is legal.
        patch_size: an int or ``(ph, pw)``.
        level: the pyramid level to read (0: full resolution).
        as_float: float32 output, integers scaled to [0, 1] (uint8 by 1/255,
            uint16 by 1/65535).
        out: a contiguous CPU tensor of the result's shape and dtype to fill.
        cache: the decoded-tile cache (default: this process's).
        threads: decoding threads (default: the CPU count).

    Raises:
        TypeError, ValueError: wrong types or shapes, sources that differ in
            channels or dtype, a level a source does not have.
    """
    sources = list(sources)
    patch = as_patch_size(patch_size, 2)
    off = _check(sources, offsets, level)
    B, N = off.shape[:2]
    C, dtype = (sources[0].channels, sources[0].dtype) if sources else (0, np.dtype(np.uint8))
    out_dtype = torch.float32 if as_float else torch.from_numpy(np.zeros(0, dtype)).dtype
    shape = (B, N, C, *patch)
    if out is None:
        out = torch.empty(shape, dtype=out_dtype)
    elif tuple(out.shape) != shape or out.dtype != out_dtype or out.device.type != "cpu" \
            or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous CPU {out_dtype} tensor of shape {shape}, "
                         f"got {out.dtype} {tuple(out.shape)} on {out.device}")
    if B * N * C == 0:
        return out.zero_()
    arrays = [s.array(level) for s in sources]
    tiled = [b for b, a in enumerate(arrays) if a is None]
    for b, a in enumerate(arrays):
        if a is not None:  # read in place, as a (1, C, H, W) tensor would be
            extract_patches(a[None], off[b:b + 1], patch, backend="auto", as_float=as_float,
                            out=out[b:b + 1])
            release_mapped_pages(a)  # a memory map's RSS stays what one batch reads
    if tiled:
        _copy_tiled([sources[b] for b in tiled], np.array(tiled, np.int64), off[tiled], patch,
                    level, out, cache if cache is not None else default_cache(), threads)
    return out


def _check(sources: list[Source], offsets: object, level: int) -> np.ndarray:
    """Offsets as (B, N, 2) int64, clamped per item into ``[-patch, size]``
    (contents unchanged, index arithmetic far from overflow)."""
    for i, s in enumerate(sources):
        if not isinstance(s, Source):
            raise TypeError(f"sources[{i}] must be an ats.sources.Source, got {type(s).__name__}")
        if s.channels != sources[0].channels or s.dtype != sources[0].dtype:
            raise ValueError(
                f"the sources of one batch must have the same channels and dtype: item 0 is "
                f"{sources[0].channels} x {sources[0].dtype}, item {i} ({s.describe()}) is "
                f"{s.channels} x {s.dtype}")
        if not 0 <= level < s.levels:
            raise ValueError(f"level {level} does not exist in {s.describe()} "
                             f"({s.levels} level(s))")
    if isinstance(offsets, torch.Tensor):
        if offsets.dtype.is_floating_point or offsets.dtype == torch.bool:
            raise TypeError(f"offsets must be integers, got {offsets.dtype}")
        offsets = offsets.cpu().numpy()
    off = np.asarray(offsets)
    if not np.issubdtype(off.dtype, np.integer):
        raise TypeError(f"offsets must be integers, got dtype {off.dtype}")
    if off.ndim != 3 or off.shape[2] != 2 or off.shape[0] != len(sources):
        raise ValueError(f"offsets must have shape (B={len(sources)}, N, 2), got {off.shape}")
    off = off.astype(np.int64)
    if len(sources):
        sizes = np.array([s.level_shapes[level] for s in sources], np.int64)[:, None, :]
        off = np.clip(off, -(1 << 40), sizes)  # farther out: all zeros either way
    return np.ascontiguousarray(off)


def tile_plan(source: Source, offsets: np.ndarray, patch: tuple[int, int],
              level: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """The tiles patches at ``offsets`` (N, 2) touch.

    Returns:
        ``(first, tiles, span)``: the first tile ``(ty, tx)`` of each patch
        (N, 2); for each patch, the tiles ``first + (j, k)`` it touches as a
        flat tile number ``ty * nx + tx`` in an (N, MY, MX) array, -1 where it
        touches none; and ``span = (MY, MX)``.
    """
    (H, W), (th, tw) = source.level_shapes[level], source.tile_shapes[level]
    nx = source.tile_grid(level)[1]
    ph, pw = patch
    span = ((ph + th - 2) // th + 1, (pw + tw - 2) // tw + 1)
    oy, ox = offsets[:, 0], offsets[:, 1]
    y0, y1 = np.maximum(oy, 0), np.minimum(oy + ph, H)
    x0, x1 = np.maximum(ox, 0), np.minimum(ox + pw, W)
    inside = (y1 > y0) & (x1 > x0)
    first = np.stack([y0 // th, x0 // tw], 1)
    last = np.stack([(y1 - 1) // th, (x1 - 1) // tw], 1)
    ty = first[:, 0, None, None] + np.arange(span[0])[None, :, None]
    tx = first[:, 1, None, None] + np.arange(span[1])[None, None, :]
    used = inside[:, None, None] & (ty <= last[:, 0, None, None]) & (tx <= last[:, 1, None, None])
    return first, np.where(used, ty * nx + tx, -1), span


def _copy_tiled(sources: list[Source], items: np.ndarray, off: np.ndarray,
                patch: tuple[int, int], level: int, out: torch.Tensor, cache: TileCache,
                threads: int | None) -> None:
    """Fill rows ``items`` of ``out`` (B, N, C, ph, pw), of the sources' dtype
    or float32 (then scaled to [0, 1]), from the sources' tiles."""
    B, N = off.shape[:2]
    plans = [tile_plan(s, off[b], patch, level) for b, s in enumerate(sources)]
    MY = max(p[2][0] for p in plans)
    MX = max(p[2][1] for p in plans)
    table = np.full((B, N, MY, MX), -1, np.int64)
    first = np.zeros((B, N, 2), np.int64)
    wanted: list[tuple[Source, int, int, int]] = []
    for b, (s, (f, flat, (my, mx))) in enumerate(zip(sources, plans)):
        nx = s.tile_grid(level)[1]
        codes, inverse = np.unique(flat, return_inverse=True)
        has_none = codes.size and codes[0] < 0
        index = inverse.reshape(flat.shape) + len(wanted) - (1 if has_none else 0)
        table[b, :, :my, :mx] = np.where(flat < 0, -1, index)
        first[b] = f
        wanted += [(s, level, int(c) // nx, int(c) % nx) for c in codes if c >= 0]
    if not wanted:
        out[torch.from_numpy(items)] = 0
        return
    tiles = fetch_tiles(wanted, cache, threads)
    from ats.sources.kernels import copy_from_tiles, typed_tiles  # imports numba

    sizes = np.array([s.level_shapes[level] for s in sources], np.int64)
    tshape = np.array([s.tile_shapes[level] for s in sources], np.int64)
    scale = np.float32(float_scale(sources[0].dtype))
    copy_from_tiles(typed_tiles(tiles), items, table, first, off, sizes, tshape, out.numpy(),
                    scale)


def fetch_tiles(wanted: Sequence[tuple[Source, int, int, int]], cache: TileCache | None = None,
                threads: int | None = None) -> list[np.ndarray]:
    """The tiles ``(source, level, ty, tx)``, from ``cache`` or decoded in
    parallel threads (and then cached); in the order asked."""
    cache = cache if cache is not None else default_cache()
    found: list[np.ndarray | None] = [cache.get((s.key, lv, ty, tx)) for s, lv, ty, tx in wanted]
    missing = [i for i, t in enumerate(found) if t is None]

    def decode(i: int) -> np.ndarray:
        s, lv, ty, tx = wanted[i]
        return s.read_tile(lv, ty, tx)

    n = threads if threads is not None else os.cpu_count() or 1
    if len(missing) > 1 and n > 1:
        decoded = list(_pool(n).map(decode, missing))
    else:
        decoded = [decode(i) for i in missing]
    for i, tile in zip(missing, decoded):
        s, lv, ty, tx = wanted[i]
        cache.put((s.key, lv, ty, tx), tile)
        found[i] = tile
    return found  # type: ignore[return-value]


_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    """A decoding thread pool of ``threads`` threads for this process."""
    key = (os.getpid(), threads)
    with _pools_lock:
        if key not in _pools:
            _pools[key] = ThreadPoolExecutor(threads, thread_name_prefix="ats-tiles")
        return _pools[key]
