"""The ``numba`` extractor: a parallel CPU kernel for data in host memory.

It reads CPU tensors and numpy arrays (``np.memmap`` included) in place and
touches only the image rows the patches cover, so ``x_high`` can be a
memory-mapped file far larger than RAM.

One kernel (:mod:`ats.plugins.extractors.numba_kernels`) serves 1 to 3
spatial dims and every dtype (rows are copied as bytes, ``as_float``
converts in the same pass) and prefetches the rows it is about to copy; tiny
outputs run on one thread; outputs come from a pool that hands a buffer out
again once nothing references it (:data:`OUTPUTS`), so that they rarely pay
the page faults of fresh memory, and fresh ones are advised huge pages;
:meth:`NumbaExtractor.extract_into` fills a given output; the compiled code
is cached on disk (``NUMBA_CACHE_DIR``). The design notes and tuning advice
are in docs/geometry.md, "The numba backend in detail".
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
from collections.abc import Callable, Iterator
from types import ModuleType

import numpy as np
import torch

from ats.core.buffers import PatchBuffers
from ats.core.extract import Array, Extractor, float_scale, torch_dtype
from ats.registry import extractor

# -- outputs -----------------------------------------------------------------------

#: fresh outputs from this size are advised to use transparent huge pages
HUGE_PAGE_BYTES = 4 << 20
_HUGE = 2 << 20  # the x86-64 / arm64 transparent huge page
_MADV_HUGEPAGE = 14


def empty_output(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty``; from :data:`HUGE_PAGE_BYTES` on, its memory is advised
    to use transparent huge pages (Linux ``madvise``).

    Outputs this large are fresh pages (glibc maps them anew): the first
    write to each 4 KiB page faults and the OS zeroes it, which cost as much
    as the copy itself. A 2 MiB huge page takes one fault where 4 KiB pages
    take 512. Nothing changes where THP is off or ``madvise`` is unavailable.
    """
    out = torch.empty(shape, dtype=dtype)
    nbytes = out.numel() * out.element_size()
    if nbytes >= HUGE_PAGE_BYTES and (madvise := _madvise()) is not None:
        ptr = out.data_ptr()
        start = -(-ptr // _HUGE) * _HUGE  # the huge pages wholly inside
        end = (ptr + nbytes) // _HUGE * _HUGE
        if end > start:
            madvise(start, end - start, _MADV_HUGEPAGE)  # a failure only costs speed
    return out


@functools.cache
def _madvise() -> Callable[[int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):  # pragma: no cover - no libc symbol
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


#: outputs larger than this are fresh memory on every call, never kept
MAX_POOLED_BYTES = 512 << 20
#: The default outputs: the last two are kept and handed out again once
#: nothing references them (so a caller that drops its patches before the
#: next call pays no page faults); ``OUTPUTS.clear()`` releases them.
OUTPUTS = PatchBuffers(keep=2, max_bytes=MAX_POOLED_BYTES, empty=empty_output)


@extractor.register("numba")
class NumbaExtractor(Extractor):
    """Parallel numba kernel over the ``B * N`` patches; host memory only."""

    name = "numba"
    #: where :meth:`extract` gets its outputs: :data:`OUTPUTS`, shared by every
    #: instance; None for fresh memory on every call
    outputs: PatchBuffers | None = OUTPUTS

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
        shape = (B, N, x.shape[1], *patch_size)
        out = empty_output(shape, dtype) if self.outputs is None else self.outputs.take(shape, dtype)
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
        unit, scale = 1, np.float32(1.0)
        if out6.dtype == xn.dtype:
            if (xb := _bytes_view(x5)) is not None:
                # Rows are contiguous: copy them as bytes (one specialisation
                # for every dtype); x offsets are scaled to bytes in the kernel.
                x5, out6, unit = xb, out6.view(np.uint8), x5.itemsize
        elif out6.dtype == np.float32:
            scale = np.float32(float_scale(xn.dtype))
        else:
            raise ValueError(f"out must have x's dtype or float32, got {out.dtype}")
        ahead = min(max(PREFETCH_BYTES // (patch_size[-1] * xn.itemsize), 1), MAX_AHEAD_ROWS)
        with _threads_for(out.numel() * out.element_size()):
            kernels().copy_patches(x5, offsets.numpy(), out6, unit, scale, ahead)
        return out


# Below this many output bytes one thread is faster than waking the pool (and
# does not wait for a descheduled worker when other processes load the CPU).
SERIAL_BYTES = 256 << 10
# The kernel prefetches the source row this many bytes (in whole rows, at
# most MAX_AHEAD_ROWS) before copying it.
PREFETCH_BYTES = 1024
MAX_AHEAD_ROWS = 8


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
def kernels() -> ModuleType:
    """The compiled kernel (:mod:`ats.plugins.extractors.numba_kernels`),
    compiled or loaded from the disk cache on first use; imports numba."""
    from ats.plugins.extractors import numba_kernels

    return numba_kernels
