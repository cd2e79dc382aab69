"""The compiled kernel of the ``numba`` extractor.

Imported on first use by :func:`ats.plugins.extractors.numba.kernels` (it
imports numba, which ``import ats.plugins`` must not). Everything lives at
module level, so that the kernel's on-disk cache key does not change from
process to process (a closure over a dispatcher would).

One kernel, :func:`copy_patches`, serves 1 to 3 spatial dims, every dtype
and both the plain copy and the float conversion: what a row becomes is
chosen when numba compiles the kernel for the argument types
(:func:`_put_row`), not per row at run time. Rows are addressed by byte
address, not through numba array views: a view per row (its bounds and
wrap-around checks) cost more than copying a 128-byte row. The design
notes are in docs/geometry.md, "The numba backend in detail".
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["copy_patches"]

_LINE = 64  # bytes per cache line
_I8P = ir.IntType(8).as_pointer()
_I32 = ir.IntType(32)


def _ptr(builder, address, ty=_I8P):
    return builder.inttoptr(address, ty)


@intrinsic
def _zero(typingctx, address, nbytes):
    """``memset(address, 0, nbytes)``."""
    sig = types.void(types.intp, types.intp)

    def codegen(context, builder, signature, args):
        address, nbytes = args
        cgutils.memset(builder, _ptr(builder, address), nbytes, 0)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _prefetch(typingctx, address, nbytes):
    """Prefetch ``[address, address + nbytes)`` for reading, a cache line at a
    time, into L1 (no effect on results)."""
    sig = types.void(types.intp, types.intp)

    def codegen(context, builder, signature, args):
        address, nbytes = args
        fnty = ir.FunctionType(ir.VoidType(), [_I8P, _I32, _I32, _I32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        zero, line = ir.Constant(nbytes.type, 0), ir.Constant(nbytes.type, _LINE)
        with cgutils.for_range_slice(builder, zero, nbytes, line) as (k, _):
            # read, high temporal locality, data cache
            builder.call(fn, [_ptr(builder, builder.add(address, k)), _I32(0), _I32(3), _I32(1)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _put_row(typingctx, dst, src, n, stride, scale, x, out):
    """Write ``n`` elements of ``out``'s dtype, contiguous at address ``dst``,
    from ``n`` elements of ``x``'s dtype at ``src``, ``stride`` bytes apart.

    Same dtypes: a ``memcpy`` when the elements are contiguous, else a loop.
    Otherwise each is converted to float32 and multiplied by ``scale``
    (``float32(v) * scale``, as :func:`ats.core.extract.to_float`).
    """
    sig = types.void(types.intp, types.intp, types.intp, types.intp, types.float32, x, out)
    convert = x.dtype != out.dtype

    def codegen(context, builder, signature, args):
        dst, src, n, stride, scale = args[:5]
        x_ty = context.get_data_type(x.dtype)
        out_ty = context.get_data_type(out.dtype)
        x_size = ir.Constant(n.type, context.get_abi_sizeof(x_ty))
        out_size = ir.Constant(n.type, context.get_abi_sizeof(out_ty))

        def loop(step):  # step: the source stride, a constant where known
            with cgutils.for_range(builder, n) as it:
                k = it.index
                v = builder.load(_ptr(builder, builder.add(src, builder.mul(k, step)),
                                      x_ty.as_pointer()), align=1)
                if convert:
                    v = builder.fmul(context.cast(builder, v, x.dtype, types.float32), scale)
                builder.store(v, _ptr(builder, builder.add(dst, builder.mul(k, out_size)),
                                      out_ty.as_pointer()), align=1)

        contiguous = builder.icmp_signed("==", stride, x_size)
        with builder.if_else(contiguous) as (then, otherwise):
            with then:
                if convert:
                    loop(x_size)
                else:
                    cgutils.raw_memcpy(builder, _ptr(builder, dst), _ptr(builder, src), n,
                                       context.get_abi_sizeof(x_ty))
            with otherwise:
                loop(stride)
        return context.get_dummy_value()

    return sig, codegen


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


@njit(parallel=True, cache=True, nogil=True)
def copy_patches(x, offsets, out, x_unit, scale, ahead):  # pragma: no cover - compiled
    """out[b, n, c, pz, py, px] = x[b, c, oz+pz, oy+py, ox+px], 0 outside.

    x: (B, C, Z, Y, X), any strides; offsets: (B, N, d) int64, the last d of
    (oz, oy, ox), ox counted in units of ``x_unit`` elements of x (the item
    size when x is viewed as bytes); out: (B, N, C, PZ, PY, PX), C-contiguous,
    of x's dtype (a copy) or float32 (``float32(x) * scale``). One patch per
    ``prange`` iteration; per row the in-image segment is copied in one piece
    and only the out-of-image parts of the (uninitialised) output are zeroed.
    The source rows are prefetched ``ahead`` rows before they are copied, and
    the first rows of the next patch at the start of a patch: the rows of a
    patch lie far apart, so the hardware prefetchers cannot guess them.
    """
    B, N = offsets.shape[0], offsets.shape[1]
    C, Z, Y, X = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    PZ, PY, PX = out.shape[3], out.shape[4], out.shape[5]
    sb, sc, sz, sy, sx = x.strides
    x0, out0, size = x.ctypes.data, out.ctypes.data, out.itemsize
    row = PX * size
    plane = PY * row
    for i in prange(B * N):
        b, oz, oy, ox, lo, hi = _patch(offsets, i, x_unit, X, PX)
        if sx > 0 and i + 1 < B * N:  # the first rows of the next patch's planes
            nb, noz, noy, nox, nlo, nhi = _patch(offsets, i + 1, x_unit, X, PX)
            for c in range(C):
                for z in range(max(noz, 0), min(noz + PZ, Z)):
                    for y in range(max(noy, 0), min(noy + ahead, noy + PY, Y)):
                        _prefetch(x0 + nb * sb + c * sc + z * sz + y * sy + (nox + nlo) * sx,
                                  (nhi - nlo) * sx)
        y0, y1 = max(oy, 0), min(oy + PY, Y)  # rows [y0, y1) are inside
        for c in range(C):
            for pz in range(PZ):
                z = oz + pz
                dst = out0 + ((i * C + c) * PZ + pz) * plane
                if z < 0 or z >= Z or y1 <= y0 or hi == lo:
                    _zero(dst, plane)
                    continue
                src = x0 + b * sb + c * sc + z * sz + (ox + lo) * sx
                if y0 > oy:
                    _zero(dst, (y0 - oy) * row)
                for y in range(y0, y1):
                    if sx > 0 and y + ahead < y1:
                        _prefetch(src + (y + ahead) * sy, (hi - lo) * sx)
                    r = dst + (y - oy) * row
                    if lo > 0:
                        _zero(r, lo * size)
                    _put_row(r + lo * size, src + y * sy, hi - lo, sx, scale, x, out)
                    if hi < PX:
                        _zero(r + hi * size, (PX - hi) * size)
                if y1 < oy + PY:
                    _zero(dst + (y1 - oy) * row, (oy + PY - y1) * row)
