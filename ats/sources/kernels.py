"""The numba kernel that copies patches out of decoded tiles.

Imported on first use (it imports numba). Each row segment is written by
:func:`put_segment`: a copy when the output has the tiles' dtype, a float32
conversion times ``scale`` otherwise, chosen when numba compiles the kernel
for the argument types, so ``as_float`` costs no second pass. Everything
lives at module level, so that the on-disk cache key of the compiled code is
the same in every process (``NUMBA_CACHE_DIR`` chooses where it is kept).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.extending import overload
from numba.typed import List

__all__ = ["copy_from_tiles", "put_segment", "typed_tiles"]


def put_segment(dst, src, scale):  # pragma: no cover - numba compiles the overload
    """``dst[:] = src``, converted to float32 times ``scale`` when the dtypes differ."""
    raise NotImplementedError("only callable from numba-compiled code")


@overload(put_segment)
def _put_segment(dst, src, scale):
    if dst.dtype != src.dtype:
        def convert(dst, src, scale):  # pragma: no cover - compiled
            for j in range(src.shape[0]):
                dst[j] = np.float32(src[j]) * scale
        return convert

    def copy(dst, src, scale):  # pragma: no cover - compiled
        for j in range(src.shape[0]):  # contiguous on both sides: LLVM vectorises it
            dst[j] = src[j]
    return copy


def typed_tiles(tiles: list[np.ndarray]) -> List:
    """The tiles as a numba typed list (microseconds per tile, where stacking
    them into one array would copy them all)."""
    out = List()
    for t in tiles:
        view = t.view()
        view.flags.writeable = False  # one numba type for cached (read-only) and fresh tiles
        out.append(view)
    return out


@njit(parallel=True, cache=True, nogil=True)
def copy_from_tiles(tiles, items, table, first, offsets, sizes, tshape, out,
                    scale):  # pragma: no cover - compiled
    """``out[items[k], n, c, py, px] = image_k[c, oy + py, ox + px]``, 0 outside.

    Args:
        tiles: typed list of ``(C, h, w)`` tiles, one dtype.
        items: ``(K,)`` int64, the row of ``out`` of each item read here.
        table: ``(K, N, MY, MX)`` int64: the index in ``tiles`` of the tile at
            ``first[k, n] + (j, k)``, -1 where the patch needs none.
        first: ``(K, N, 2)`` int64 tile row and column of each patch's first tile.
        offsets: ``(K, N, 2)`` int64 top-left corners in pixels.
        sizes: ``(K, 2)`` int64 image height and width of each item.
        tshape: ``(K, 2)`` int64 tile height and width of each item.
        out: ``(B, N, C, PY, PX)``, the tiles' dtype or float32.
        scale: float32 factor of the conversion to float32.
    """
    K, N = offsets.shape[0], offsets.shape[1]
    C, PY, PX = out.shape[2], out.shape[3], out.shape[4]
    for i in prange(K * N):
        k = i // N
        n = i - k * N
        b = items[k]
        oy, ox = offsets[k, n, 0], offsets[k, n, 1]
        H, W = sizes[k, 0], sizes[k, 1]
        th, tw = tshape[k, 0], tshape[k, 1]
        ty0, tx0 = first[k, n, 0], first[k, n, 1]
        lo = min(max(-ox, 0), PX)  # columns [lo, hi) of the patch are inside
        hi = max(min(W - ox, PX), lo)
        for c in range(C):
            for py in range(PY):
                dst = out[b, n, c, py]
                y = oy + py
                if y < 0 or y >= H:
                    for j in range(PX):
                        dst[j] = 0
                    continue
                for j in range(lo):
                    dst[j] = 0
                for j in range(hi, PX):
                    dst[j] = 0
                ty = y // th
                px = lo
                while px < hi:  # one segment per tile the row crosses
                    x = ox + px
                    tx = x // tw
                    end = min(hi, (tx + 1) * tw - ox)
                    row = tiles[table[k, n, ty - ty0, tx - tx0]][c, y - ty * th]
                    s0 = x - tx * tw
                    put_segment(dst[px:end], row[s0:s0 + end - px], scale)
                    px = end
