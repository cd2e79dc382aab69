"""The ``numba`` extractor: a parallel CPU kernel for data in host memory.

It reads CPU tensors and numpy arrays (``np.memmap`` included) in place and
touches only the image rows the patches cover, so ``x_high`` can be a
memory-mapped file far larger than RAM.

One kernel serves 1 to 3 spatial dims and every dtype (rows are copied as
bytes; ``as_float`` converts in the same pass); tiny outputs run on one
thread; :meth:`NumbaExtractor.extract_into` fills a reused output; the
compiled code is cached on disk (``NUMBA_CACHE_DIR``). The design notes and
tuning advice are in docs/geometry.md, "The numba backend in detail".
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import torch

from ats.core.extract import Array, Extractor, float_scale, torch_dtype
from ats.registry import extractor


@extractor.register("numba")
class NumbaExtractor(Extractor):
    """Parallel numba kernel over the ``B * N`` patches; host memory only."""

    name = "numba"

    def supports(self, x: Array) -> bool:
        return isinstance(x, np.ndarray) or x.device.type == "cpu"

    def unsupported_reason(self, x: Array) -> str:
        return (
            f"it reads host memory (CPU tensors, numpy arrays) but x is on "
            f"{x.device}; use backend='torch' or 'auto'"
        )

    def extract(
        self,
        x: Array,
        offsets: torch.Tensor,
        patch_size: tuple[int, ...],
        as_float: bool,
    ) -> torch.Tensor:
        B, N, _ = offsets.shape
        dtype = torch.float32 if as_float else torch_dtype(x)
        out = torch.empty((B, N, x.shape[1], *patch_size), dtype=dtype)
        return self.extract_into(x, offsets, patch_size, out)

    def extract_into(self, x: Array, offsets: torch.Tensor, patch_size: tuple[int, ...],
                     out: torch.Tensor) -> torch.Tensor:
        """:meth:`extract` into a given C-contiguous CPU tensor ``out``
        (B, N, C, *patch), of x's dtype or float32 (then scaled as
        ``as_float``). Reusing ``out`` saves the page faults of fresh memory.
        """
        # Views only: the image is never copied.
        xn = (x.detach() if x.requires_grad else x).numpy() if isinstance(x, torch.Tensor) else x
        B, N, d = offsets.shape
        expected = (B, N, xn.shape[1], *patch_size)
        if tuple(out.shape) != expected or not out.is_contiguous() or out.device.type != "cpu":
            raise ValueError(f"out must be a contiguous CPU tensor of shape {expected}")
        x5 = xn[(slice(None), slice(None)) + (None,) * (3 - d)]  # (B, C, Z, Y, X)
        out6 = out.numpy().reshape(B, N, xn.shape[1], *((1,) * (3 - d) + tuple(patch_size)))
        off = offsets.numpy()
        k = kernels()
        with _threads_for(out.numel() * out.element_size()):
            if out6.dtype == xn.dtype:
                if (xb := _bytes_view(x5)) is not None:
                    # Rows are contiguous: copy them as bytes (one specialisation
                    # for every dtype); x offsets are scaled to bytes in the kernel.
                    k.copy_patches(xb, off, out6.view(np.uint8), x5.itemsize)
                else:
                    k.copy_patches(x5, off, out6, 1)
            elif out6.dtype == np.float32:
                k.scale_patches(x5, off, out6, np.float32(float_scale(xn.dtype)))
            else:
                raise ValueError(f"out must have x's dtype or float32, got {out.dtype}")
        return out


# Below this many output bytes one thread is faster than waking the pool (and
# does not wait for a descheduled worker when other processes load the CPU).
SERIAL_BYTES = 256 << 10


@contextlib.contextmanager
def _threads_for(nbytes: int) -> Iterator[None]:
    if nbytes >= SERIAL_BYTES:
        yield
        return
    import numba

    previous = numba.get_num_threads()  # per calling thread, cheap to change
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def _bytes_view(x: np.ndarray) -> np.ndarray | None:
    """x as uint8 with the last axis in bytes, or None if its rows are strided."""
    if x.strides[-1] != x.itemsize:
        return None
    try:
        return x.view(np.uint8)
    except ValueError:
        return None


@functools.cache
def kernels() -> SimpleNamespace:
    """Compile (or load from the disk cache) the kernels; imports numba."""
    from numba import njit, prange

    # The kernels share no jitted helper: a closure over another dispatcher
    # would change numba's cache key every process (no cache hits).
    @njit(parallel=True, cache=True, nogil=True)
    def copy_patches(x, offsets, out, x_unit):  # pragma: no cover - compiled
        """out[b, n, c, pz, py, px] = x[b, c, oz+pz, oy+py, ox+px] or 0 outside.

        x: (B, C, Z, Y, X); offsets: (B, N, d) int64, the last d of (oz, oy,
        ox), ox counted in units of ``x_unit`` elements of x (the item size
        when x is viewed as bytes); out: (B, N, C, PZ, PY, PX).
        """
        B, N, d = offsets.shape
        C, Z, Y, X = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
        PZ, PY, PX = out.shape[3], out.shape[4], out.shape[5]
        for i in prange(B * N):
            b = i // N
            n = i - b * N
            # Missing leading dims start at 0.
            oz = offsets[b, n, d - 3] if d >= 3 else 0
            oy = offsets[b, n, d - 2] if d >= 2 else 0
            ox = offsets[b, n, d - 1] * x_unit
            # Columns [lo, hi) of the patch lie inside the image.
            lo = min(max(-ox, 0), PX)
            hi = max(min(X - ox, PX), lo)
            for c in range(C):
                for pz in range(PZ):
                    z = oz + pz
                    for py in range(PY):
                        y = oy + py
                        dst = out[b, n, c, pz, py]
                        if 0 <= z and z < Z and 0 <= y and y < Y:
                            for j in range(lo):
                                dst[j] = 0
                            src = x[b, c, z, y, ox + lo : ox + hi]
                            seg = dst[lo:hi]
                            for j in range(hi - lo):  # a contiguous segment
                                seg[j] = src[j]
                            for j in range(hi, PX):
                                dst[j] = 0
                        else:
                            for j in range(PX):
                                dst[j] = 0

    @njit(parallel=True, cache=True, nogil=True)
    def scale_patches(x, offsets, out, scale):  # pragma: no cover - compiled
        """As copy_patches, converting to float32 times ``scale`` in the same pass."""
        B, N, d = offsets.shape
        C, Z, Y, X = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
        PZ, PY, PX = out.shape[3], out.shape[4], out.shape[5]
        for i in prange(B * N):
            b = i // N
            n = i - b * N
            oz = offsets[b, n, d - 3] if d >= 3 else 0
            oy = offsets[b, n, d - 2] if d >= 2 else 0
            ox = offsets[b, n, d - 1]
            lo = min(max(-ox, 0), PX)
            hi = max(min(X - ox, PX), lo)
            for c in range(C):
                for pz in range(PZ):
                    z = oz + pz
                    for py in range(PY):
                        y = oy + py
                        dst = out[b, n, c, pz, py]
                        if 0 <= z and z < Z and 0 <= y and y < Y:
                            for j in range(lo):
                                dst[j] = 0
                            src = x[b, c, z, y, ox + lo : ox + hi]
                            seg = dst[lo:hi]
                            for j in range(hi - lo):
                                seg[j] = np.float32(src[j]) * scale
                            for j in range(hi, PX):
                                dst[j] = 0
                        else:
                            for j in range(PX):
                                dst[j] = 0

    return SimpleNamespace(copy_patches=copy_patches, scale_patches=scale_patches)
