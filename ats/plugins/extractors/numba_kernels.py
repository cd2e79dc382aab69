"""The compiled kernel of the ``numba`` extractor.

Imported on first use by :func:`ats.plugins.extractors.numba.kernels` (it
imports numba, which ``import ats.plugins`` must not). Everything lives at
module level, so that the kernel's on-disk cache key does not change from
process to process (a closure over a dispatcher would).

One kernel, :func:`copy_patches`, serves 1 to 3 spatial dims, every dtype
and both the plain copy and the float conversion: what to do with a row is
chosen when numba compiles it for the argument types (:func:`put_row`), not
per row at run time. The design notes are in docs/geometry.md, "The numba
backend in detail".
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

__all__ = ["copy_patches", "put_row"]

_LINE = 64  # bytes per cache line


@intrinsic
def _memcpy(typingctx, dst, src, nbytes):
    """``memcpy(dst.data, src.data, nbytes)`` (LLVM's intrinsic, libc's copy)."""
    sig = types.void(dst, src, types.intp)

    def codegen(context, builder, signature, args):
        d, s, n = args
        dst_ary = context.make_array(signature.args[0])(context, builder, d)
        src_ary = context.make_array(signature.args[1])(context, builder, s)
        cgutils.raw_memcpy(builder, dst_ary.data, src_ary.data, n, 1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _prefetch(typingctx, row, start, nbytes):
    """Prefetch bytes ``[start, start + nbytes)`` of ``row``'s data for reading,
    one cache line at a time (no effect on results)."""
    sig = types.void(row, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        r, s, n = args
        ary = context.make_array(signature.args[0])(context, builder, r)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        base = builder.gep(builder.bitcast(ary.data, i8p), [s])
        step = ir.Constant(n.type, _LINE)
        with cgutils.for_range_slice(builder, ir.Constant(n.type, 0), n, step) as (k, _):
            # read, high temporal locality (L1), data cache
            builder.call(fn, [builder.gep(base, [k]), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


def put_row(dst, src, scale):  # pragma: no cover - numba compiles the overload
    """``dst[:] = src``, converted to float32 times ``scale`` when the dtypes
    differ. Which of the three bodies below runs is decided at compile time."""
    raise NotImplementedError("only callable from numba-compiled code")


@overload(put_row)
def _put_row(dst, src, scale):
    if dst.dtype != src.dtype:
        def convert(dst, src, scale):
            for j in range(src.shape[0]):
                dst[j] = np.float32(src[j]) * scale
        return convert
    if src.layout == "C" and dst.layout == "C":
        def copy(dst, src, scale):
            _memcpy(dst, src, src.shape[0] * src.itemsize)
        return copy

    def copy_strided(dst, src, scale):
        for j in range(src.shape[0]):
            dst[j] = src[j]
    return copy_strided


@njit(cache=True, nogil=True)
def _patch(offsets, i, x_unit, X, PX):  # pragma: no cover - compiled
    """(b, oz, oy, ox, lo, hi) of patch i: its batch item, its start (ox in
    units of x_unit elements) and the columns [lo, hi) of it inside the image."""
    N, d = offsets.shape[1], offsets.shape[2]
    b = i // N
    n = i - b * N
    oz = offsets[b, n, d - 3] if d >= 3 else 0  # missing leading dims start at 0
    oy = offsets[b, n, d - 2] if d >= 2 else 0
    ox = offsets[b, n, d - 1] * x_unit
    lo = min(max(-ox, 0), PX)
    hi = max(min(X - ox, PX), lo)
    return b, oz, oy, ox, lo, hi


@njit(cache=True, nogil=True)
def _prefetch_rows(x, b, oz, oy, ox, lo, hi, c, pz, py0, py1):  # pragma: no cover
    """Prefetch the in-image part of rows py0..py1-1 of plane (c, pz)."""
    Z, Y = x.shape[2], x.shape[3]
    z = oz + pz
    if hi > lo and 0 <= z and z < Z:
        for py in range(py0, py1):
            y = oy + py
            if 0 <= y and y < Y:
                row = x[b, c, z, y]
                _prefetch(row, (ox + lo) * row.strides[0], (hi - lo) * row.strides[0])


@njit(parallel=True, cache=True, nogil=True)
def copy_patches(x, offsets, out, x_unit, scale, ahead):  # pragma: no cover - compiled
    """out[b, n, c, pz, py, px] = x[b, c, oz+pz, oy+py, ox+px], 0 outside.

    x: (B, C, Z, Y, X), any strides; offsets: (B, N, d) int64, the last d of
    (oz, oy, ox), ox counted in units of ``x_unit`` elements of x (the item
    size when x is viewed as bytes); out: (B, N, C, PZ, PY, PX), C-contiguous,
    of x's dtype (a copy) or float32 (``float32(x) * scale``). One patch per
    ``prange`` iteration; per row the in-image segment is copied in one piece
    and only the out-of-image parts of the (uninitialised) output are zeroed.
    The source rows are prefetched ``ahead`` rows before they are copied: the
    rows of a patch lie far apart, so hardware prefetchers cannot guess them.
    """
    B, N = offsets.shape[0], offsets.shape[1]
    C, Z, Y, X = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    PZ, PY, PX = out.shape[3], out.shape[4], out.shape[5]
    for i in prange(B * N):
        n = i - (i // N) * N
        b, oz, oy, ox, lo, hi = _patch(offsets, i, x_unit, X, PX)
        if i + 1 < B * N:  # the first rows of every plane of the next patch
            nb, noz, noy, nox, nlo, nhi = _patch(offsets, i + 1, x_unit, X, PX)
            for c in range(C):
                for pz in range(PZ):
                    _prefetch_rows(x, nb, noz, noy, nox, nlo, nhi, c, pz, 0, min(ahead, PY))
        for c in range(C):
            for pz in range(PZ):
                z = oz + pz
                for py in range(PY):
                    y = oy + py
                    dst = out[b, n, c, pz, py]
                    if 0 <= z and z < Z and 0 <= y and y < Y:
                        if py + ahead < PY:
                            _prefetch_rows(x, b, oz, oy, ox, lo, hi, c, pz, py + ahead,
                                           py + ahead + 1)
                        for j in range(lo):
                            dst[j] = 0
                        put_row(dst[lo:hi], x[b, c, z, y, ox + lo: ox + hi], scale)
                        for j in range(hi, PX):
                            dst[j] = 0
                    else:
                        for j in range(PX):
                            dst[j] = 0
