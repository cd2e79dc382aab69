"""The numba backend's one kernel (docs/geometry.md, "The numba backend in
detail"): copies and conversions through the same compiled kernel, row
prefetching at every distance, and huge-page advice for fresh outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ats.core.extract import extract_patches
from ats.plugins.extractors import numba as numba_backend
from tests.plugins.extractors.cases import (
    DTYPES,
    assert_same,
    random_image,
    random_offsets,
    reference,
)


@pytest.fixture(autouse=True)
def numba_always_parallel(monkeypatch):
    monkeypatch.setattr(numba_backend, "SERIAL_BYTES", 0)


def _spy_kernel(monkeypatch):
    """Record the arguments of every kernel call (the kernel still runs)."""
    real = numba_backend.kernels()
    calls = []

    class Spy:
        @staticmethod
        def copy_patches(*args):
            calls.append(args)
            return real.copy_patches(*args)

    monkeypatch.setattr(numba_backend, "kernels", lambda: Spy)
    return calls


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_copies_go_as_bytes_and_conversions_as_typed_rows_through_one_kernel(monkeypatch, dtype):
    calls = _spy_kernel(monkeypatch)
    g = torch.Generator().manual_seed(1)
    x = random_image(g, (2, 3, 30, 40), dtype)
    off = random_offsets(g, 2, 7, (30, 40), (9, 11))
    assert_same(extract_patches(x, off, (9, 11), backend="numba"), reference(x, off, (9, 11)))
    xk, _, outk, unit, _, _ = calls[-1]
    # a copy never depends on the dtype: rows move as bytes, offsets scaled
    assert xk.dtype == outk.dtype == np.uint8 and unit == x.element_size()
    out = extract_patches(x, off, (9, 11), backend="numba", as_float=True)
    assert_same(out, reference(x, off, (9, 11), as_float=True))
    xk, _, outk, unit, scale, _ = calls[-1]
    if dtype == torch.float32:  # as_float on float32 is a copy
        assert xk.dtype == np.uint8
    else:
        assert xk.dtype == x.numpy().dtype and outk.dtype == np.float32 and unit == 1
        expected = {torch.uint8: 1 / 255, torch.uint16: 1 / 65535}.get(dtype, 1.0)
        assert scale == np.float32(expected)


@pytest.mark.parametrize("patch,dtype", [
    ((40, 300), torch.float64),  # 2400-byte rows: prefetch 1 row ahead
    ((3, 5), torch.uint8),       # patches shorter than the prefetch distance
    ((25, 17), torch.float32),   # 68-byte rows: 8 rows ahead
])
def test_every_prefetch_distance_gives_the_reference(monkeypatch, patch, dtype):
    calls = _spy_kernel(monkeypatch)
    g = torch.Generator().manual_seed(2)
    x = random_image(g, (3, 2, 50, 320), dtype)
    off = random_offsets(g, 3, 9, (50, 320), patch)
    assert_same(extract_patches(x, off, patch, backend="numba"), reference(x, off, patch))
    row_bytes = patch[1] * x.element_size()
    expected = min(max(numba_backend.PREFETCH_BYTES // row_bytes, 1),
                   numba_backend.MAX_AHEAD_ROWS)
    assert calls[-1][-1] == expected
    # strided rows (every other column): typed, element by element
    xs = x[..., ::2]
    off = random_offsets(g, 3, 9, (50, 160), patch[:1] + (min(patch[1], 150),))
    p = patch[:1] + (min(patch[1], 150),)
    assert_same(extract_patches(xs, off, p, backend="numba"), reference(xs.contiguous(), off, p))
    assert calls[-1][0].dtype == xs.numpy().dtype


def test_3d_and_1d_patches_far_outside_and_across_borders():
    g = torch.Generator().manual_seed(3)
    for shape, patch in [((2, 2, 9, 12, 20), (4, 5, 6)), ((2, 3, 50), (13,))]:
        x = random_image(g, shape, torch.float32)
        off = random_offsets(g, 2, 11, shape[2:], patch)
        assert_same(extract_patches(x, off, patch, backend="numba"), reference(x, off, patch))


def test_fresh_outputs_from_the_huge_page_size_on_are_advised(monkeypatch):
    advised = []
    monkeypatch.setattr(numba_backend, "_madvise",
                        lambda: lambda start, length, advice: advised.append((start, length, advice)))
    huge = 2 << 20
    small = numba_backend.empty_output((1, 1000), torch.float32)
    assert advised == [] and small.shape == (1, 1000)
    out = numba_backend.empty_output((5, 1 << 20), torch.float32)  # 20 MiB
    (start, length, advice), = advised
    ptr, end = out.data_ptr(), out.data_ptr() + 20 * (1 << 20)
    assert advice == 14 and start % huge == 0 and length % huge == 0 and length > 0
    assert ptr <= start < ptr + huge and end - huge < start + length <= end
    # an extractor without the pool takes fresh (advised) memory every call
    fresh = numba_backend.NumbaExtractor()
    fresh.outputs = None
    g = torch.Generator().manual_seed(4)
    x = random_image(g, (2, 1, 600, 600), torch.uint8)
    off = random_offsets(g, 2, 40, (600, 600), (160, 160))
    advised.clear()
    for _ in range(2):
        out = extract_patches(x, off, 160, backend=fresh, as_float=True)
        assert_same(out, reference(x, off, 160, as_float=True))
    assert len(advised) == 2 and out.dtype == torch.float32
    monkeypatch.setattr(numba_backend, "_madvise", lambda: None)  # not Linux
    assert_same(extract_patches(x, off, 160, backend=fresh), reference(x, off, 160))


def test_default_outputs_come_from_a_pool_that_never_hands_out_what_is_held(monkeypatch):
    from ats.core.buffers import PatchBuffers

    made = []

    def empty(shape, dtype):
        made.append(torch.empty(shape, dtype=dtype))
        return made[-1]

    monkeypatch.setattr(numba_backend.NumbaExtractor, "outputs",
                        PatchBuffers(keep=2, max_bytes=1 << 19, empty=empty))
    g = torch.Generator().manual_seed(6)
    x = random_image(g, (2, 3, 60, 60), torch.float32)
    offs = [random_offsets(g, 2, 9, (60, 60), (20, 20)) for _ in range(5)]
    a = extract_patches(x, offs[0], 20, backend="numba")
    kept = a.clone()
    b = extract_patches(x, offs[1], 20, backend="numba")  # `a` is held: a new buffer
    assert len(made) == 2 and a.data_ptr() != b.data_ptr() and torch.equal(a, kept)
    b_ptr = b.data_ptr()
    del b
    c = extract_patches(x, offs[2], 20, backend="numba")  # b's buffer is free again
    assert len(made) == 2 and c.data_ptr() == b_ptr
    for out, off in ((a, offs[0]), (c, offs[2])):
        assert_same(out, reference(x, off, 20))
    view, c_kept = c.numpy(), c.clone()  # a numpy view holds the buffer too
    del c
    d = extract_patches(x, offs[3], 20, backend="numba")
    assert len(made) == 3 and d.data_ptr() != b_ptr
    assert np.array_equal(view, c_kept.numpy())
    assert_same(d, reference(x, offs[3], 20))
    # outputs above max_bytes are never kept
    big = extract_patches(x, random_offsets(g, 2, 9, (60, 60), (60, 60)), 60, backend="numba")
    assert len(made) == 4 and big.numel() * 4 > 1 << 19
    assert all(s.buffer.numel() * 4 <= 1 << 19 for s in numba_backend.NumbaExtractor.outputs._slots)
