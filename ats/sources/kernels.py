"""The numba kernel that copies patches out of decoded tiles.

Imported on first use (it imports numba). The compiled code is cached on
disk like the extractors' (``NUMBA_CACHE_DIR`` chooses where).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.typed import List

__all__ = ["copy_from_tiles", "typed_tiles"]


def typed_tiles(tiles: list[np.ndarray]) -> List:
    """A numba typed list of the tiles as ``(C, h, w * itemsize)`` byte views
    (one compiled kernel serves every dtype; the list costs microseconds per
    tile, where stacking the tiles into one array would copy them all)."""
    out = List()
    for t in tiles:
        view = t.view(np.uint8).reshape(t.shape[0], t.shape[1], -1)
        view.flags.writeable = False  # one numba type for cached (read-only) and fresh tiles
        out.append(view)
    return out


@njit(parallel=True, cache=True, nogil=True)
def copy_from_tiles(tiles, table, first, offsets, sizes, tshape, out, unit):  # pragma: no cover
    """``out[b, n, c, py, px] = image_b[c, oy + py, ox + px]``, 0 outside.

    Args:
        tiles: typed list of ``(C, h, w * unit)`` uint8 tile views.
        table: ``(B, N, MY, MX)`` int64: the index in ``tiles`` of the tile
            at ``(first[b, n] + (j, k))``, -1 where the patch needs none.
        first: ``(B, N, 2)`` int64 tile row and column of each patch's first tile.
        offsets: ``(B, N, 2)`` int64 top-left corners in pixels.
        sizes: ``(B, 2)`` int64 image height and width of each item.
        tshape: ``(B, 2)`` int64 tile height and width of each item.
        out: ``(B, N, C, PY, PX * unit)`` uint8 view of the output.
        unit: bytes per pixel value.
    """
    B, N = offsets.shape[0], offsets.shape[1]
    C, PY, PXB = out.shape[2], out.shape[3], out.shape[4]
    PX = PXB // unit
    for i in prange(B * N):
        b = i // N
        n = i - b * N
        oy, ox = offsets[b, n, 0], offsets[b, n, 1]
        H, W = sizes[b, 0], sizes[b, 1]
        th, tw = tshape[b, 0], tshape[b, 1]
        ty0, tx0 = first[b, n, 0], first[b, n, 1]
        lo = min(max(-ox, 0), PX)  # columns [lo, hi) of the patch are inside
        hi = max(min(W - ox, PX), lo)
        for c in range(C):
            for py in range(PY):
                dst = out[b, n, c, py]
                y = oy + py
                if y < 0 or y >= H:
                    for j in range(PXB):
                        dst[j] = 0
                    continue
                for j in range(lo * unit):
                    dst[j] = 0
                for j in range(hi * unit, PXB):
                    dst[j] = 0
                ty = y // th
                yy = y - ty * th
                px = lo
                while px < hi:  # one segment per tile the row crosses
                    x = ox + px
                    tx = x // tw
                    end = min(hi, (tx + 1) * tw - ox)
                    src = tiles[table[b, n, ty - ty0, tx - tx0]]
                    s0 = (x - tx * tw) * unit
                    d0 = px * unit
                    for j in range((end - px) * unit):
                        dst[d0 + j] = src[c, yy, s0 + j]
                    px = end
