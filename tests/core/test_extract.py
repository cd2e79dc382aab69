"""Patch extraction: every backend against the reference loop (docs/geometry.md,
"Patch extraction").

The reference itself is pinned by hand-computed cases; the fast backends
(numba, torch, auto) must equal it exactly on random cases covering 1-3
spatial dims, non-square patches, patches inside, across every border and
far outside, the four dtypes, ``as_float``, numpy / memmap input, tensors
requiring grad and non-contiguous input, on CPU and (when present) CUDA.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import torch

from ats.core.extract import Extractor, extract_patches, validate
from ats.plugins.extractors import numba as numba_backend
from ats.registry import extractor

HAS_CUDA = torch.cuda.is_available()
cuda = [pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")]

# (backend, device) pairs under test; numba reads host memory only.
FAST = [
    pytest.param("numba", "cpu", id="numba-cpu"),
    pytest.param("torch", "cpu", id="torch-cpu"),
    pytest.param("auto", "cpu", id="auto-cpu"),
    pytest.param("torch", "cuda", id="torch-cuda", marks=cuda),
    pytest.param("auto", "cuda", id="auto-cuda", marks=cuda),
    pytest.param("reference", "cuda", id="reference-cuda", marks=cuda),
]
HOST = ["numba", "torch", "auto"]
DTYPES = [torch.uint8, torch.uint16, torch.float32, torch.float64]
NP_DTYPES = {torch.uint8: np.uint8, torch.uint16: np.uint16,
             torch.float32: np.float32, torch.float64: np.float64}


@pytest.fixture(autouse=True)
def numba_always_parallel(monkeypatch):
    """Small outputs normally run the numba kernel on one thread; the tests'
    outputs are small, so force the thread pool to cover the parallel path."""
    monkeypatch.setattr(numba_backend, "SERIAL_BYTES", 0)


def random_image(gen: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    if dtype.is_floating_point:
        return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    high = 256 if dtype == torch.uint8 else 65536
    return torch.randint(0, high, shape, generator=gen).to(dtype)


def random_offsets(gen: torch.Generator, B: int, N: int, sizes, patch) -> torch.Tensor:
    """Offsets inside, across every border, and entirely (also far) outside."""
    cols = []
    for s, p in zip(sizes, patch):
        cols.append(torch.randint(-p - 2, s + 3, (B, N), generator=gen))
    off = torch.stack(cols, -1)
    far = torch.tensor([-(10**9), 10**9])[torch.randint(0, 2, off.shape, generator=gen)]
    pick = torch.rand(off.shape, generator=gen) < 0.05
    return torch.where(pick, far, off)


def reference(x, offsets, patch, as_float=False):
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
    if isinstance(offsets, torch.Tensor):
        offsets = offsets.cpu()
    return extract_patches(x, offsets, patch, backend="reference", as_float=as_float)


def assert_same(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert out.dtype == ref.dtype
    assert out.shape == ref.shape
    assert torch.equal(out.cpu(), ref), (out.cpu() != ref).nonzero()[:5]


# -- the reference, by hand --------------------------------------------------------


def test_reference_hand_computed_2d():
    x = torch.arange(100, dtype=torch.float32).view(1, 1, 10, 10)
    off = torch.tensor([[[-2, -2], [8, 7], [3, 4], [10, 0], [-3, 5]]])
    p = extract_patches(x, off, (3, 4), backend="reference")
    assert p.shape == (1, 5, 1, 3, 4)
    # Top-left corner: only x[0, 0:2] lies inside, at patch row 2, cols 2-3.
    assert p[0, 0, 0].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]
    # Bottom-right: rows 8-9, cols 7-9 inside.
    assert p[0, 1, 0].tolist() == [[87, 88, 89, 0], [97, 98, 99, 0], [0, 0, 0, 0]]
    assert p[0, 2, 0].tolist() == [[34, 35, 36, 37], [44, 45, 46, 47], [54, 55, 56, 57]]
    assert p[0, 3].abs().sum() == 0  # starts just past the last row
    assert p[0, 4].abs().sum() == 0  # ends just before the first row


def test_reference_hand_computed_1d_and_3d():
    x = torch.tensor([[[1, 2, 3]], [[4, 5, 6]]], dtype=torch.uint8)  # (2, 1, 3)
    p = extract_patches(x, torch.tensor([[[-1]], [[2]]]), 5, backend="reference")
    assert p[:, 0, 0].tolist() == [[0, 1, 2, 3, 0], [6, 0, 0, 0, 0]]

    x3 = torch.arange(27, dtype=torch.float64).view(1, 1, 3, 3, 3)
    p3 = extract_patches(x3, torch.tensor([[[2, -1, 1]]]), (2, 2, 3), backend="reference")
    assert p3[0, 0, 0].tolist() == [[[0, 0, 0], [19, 20, 0]], [[0, 0, 0], [0, 0, 0]]]


def test_reference_case_3_zero_corner():
    """Case 3 of docs/geometry.md, "Worked examples": start -5 of a 50 patch:
    patch[5:, 5:] = x[:45, :45]."""
    g = torch.Generator().manual_seed(3)
    x = random_image(g, (2, 3, 100, 100), torch.float32)
    p = extract_patches(x, torch.full((2, 1, 2), -5), 50, backend="reference")
    assert torch.equal(p[:, 0, :, 5:, 5:], x[:, :, :45, :45])
    assert p[:, 0, :, :5, :].abs().sum() == 0 and p[:, 0, :, :, :5].abs().sum() == 0


# -- fast backends against the reference ----------------------------------------------

SHAPES = {  # d -> list of (spatial size, patch) with non-square patches and oversize ones
    1: [((37,), (5,)), ((4,), (9,))],
    2: [((13, 17), (4, 6)), ((9, 5), (3, 8)), ((6, 7), (6, 7))],
    3: [((5, 6, 7), (2, 3, 4)), ((4, 3, 6), (5, 2, 2))],
}


@pytest.mark.parametrize("backend,device", FAST)
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_reference_random(backend, device, d, dtype):
    g = torch.Generator().manual_seed(100 * d + DTYPES.index(dtype))
    for sizes, patch in SHAPES[d]:
        B, C, N = 3, 2, 40
        x = random_image(g, (B, C, *sizes), dtype)
        off = random_offsets(g, B, N, sizes, patch)
        for as_float in (False, True):
            out = extract_patches(x.to(device), off.to(device), patch,
                                  backend=backend, as_float=as_float)
            assert out.device.type == device
            assert_same(out, reference(x, off, patch, as_float))


@pytest.mark.parametrize("backend,device", FAST)
def test_partially_outside_on_every_side(backend, device):
    g = torch.Generator().manual_seed(1)
    H, W, p = 8, 9, 4
    x = random_image(g, (1, 2, H, W), torch.float32)
    starts = [(-2, 3), (3, -2), (H - 2, 3), (3, W - 2),  # each side
              (-1, -3), (-3, W - 1), (H - 1, -1), (H - 3, W - 2)]  # each corner
    off = torch.tensor([starts])
    out = extract_patches(x.to(device), off.to(device), p, backend=backend)
    ref = reference(x, off, p)
    assert_same(out, ref)
    # e.g. the top side: patch rows 0-1 are zero, rows 2-3 are image rows 0-1.
    assert out[0, 0, :, :2].abs().sum() == 0
    assert torch.equal(out[0, 0, :, 2:].cpu(), x[0, :, 0:2, 3:7])


@pytest.mark.parametrize("backend,device", FAST)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_entirely_outside_is_zero(backend, device, dtype):
    x = torch.ones((2, 3, 6, 5), dtype=dtype, device=device)
    big = 2**62  # far outside, and no int64 overflow in start + patch
    off = torch.tensor([[[-4, 0], [6, 0], [0, 5], [0, -3]],
                        [[-big, -big], [big, big], [-big, big], [3, big]]], device=device)
    out = extract_patches(x, off, (4, 3), backend=backend)
    assert out.shape == (2, 4, 3, 4, 3)
    assert out.dtype == dtype
    assert not out.any()


@pytest.mark.parametrize("backend,device", FAST)
def test_as_float_scales_to_unit_range(backend, device):
    for dtype, top in [(torch.uint8, 255), (torch.uint16, 65535)]:
        x = torch.tensor([[[0, top // 2, top]]]).to(dtype).to(device)  # (1, 1, 3)
        out = extract_patches(x, torch.tensor([[[0]]]), 3, backend=backend, as_float=True)
        assert out.dtype == torch.float32
        assert out.flatten().tolist() == pytest.approx([0.0, (top // 2) / top, 1.0], abs=1e-7)
    x = torch.tensor([[[0.25, -1.5]]], dtype=torch.float64, device=device)
    out = extract_patches(x, torch.tensor([[[0]]]), 2, backend=backend, as_float=True)
    assert out.dtype == torch.float32 and out.flatten().tolist() == [0.25, -1.5]


@pytest.mark.parametrize("backend,device", FAST)
def test_batch_independence(backend, device):
    g = torch.Generator().manual_seed(2)
    x = random_image(g, (4, 3, 20, 15), torch.uint8).to(device)
    off = random_offsets(g, 4, 7, (20, 15), (6, 5)).to(device)
    full = extract_patches(x, off, (6, 5), backend=backend)
    for b in range(4):
        alone = extract_patches(x[b : b + 1], off[b : b + 1], (6, 5), backend=backend)
        assert torch.equal(alone, full[b : b + 1])
    # Patches of different items differ (the test would pass for a constant).
    assert not torch.equal(full[0], full[1])


@pytest.mark.parametrize("backend,device", FAST)
def test_non_contiguous_input(backend, device):
    g = torch.Generator().manual_seed(4)
    base = random_image(g, (3, 4, 30, 40), torch.float32).to(device)
    views = {
        "cropped rows": base[:, 1:3, 2:25, 5:33],  # rows contiguous, image strided
        "strided cols": base[:, :, ::2, 1::3],
        "channels last": base.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2),
        "transposed": base.transpose(2, 3),
        "broadcast batch": base[:1].expand(3, -1, -1, -1),  # stride 0
    }
    for name, x in views.items():
        assert not x.is_contiguous(), name
        off = random_offsets(g, 3, 12, x.shape[2:], (5, 7)).to(device)
        out = extract_patches(x, off, (5, 7), backend=backend)
        assert_same(out, reference(x.contiguous(), off, (5, 7)))


@pytest.mark.parametrize("backend,device", FAST)
def test_requires_grad_input(backend, device):
    g = torch.Generator().manual_seed(5)
    x = random_image(g, (2, 3, 12, 12), torch.float32).to(device).requires_grad_()
    off = random_offsets(g, 2, 9, (12, 12), (4, 4)).to(device)
    out = extract_patches(x, off, 4, backend=backend)
    assert_same(out, reference(x, off, 4))
    assert not out.requires_grad  # no gradient reaches x_high (docs/geometry.md)


@pytest.mark.parametrize("backend", HOST)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_numpy_input(backend, dtype):
    g = torch.Generator().manual_seed(6)
    x = random_image(g, (2, 3, 11, 13), dtype)
    off = random_offsets(g, 2, 15, (11, 13), (4, 5))
    ref = reference(x, off, (4, 5))
    xn = x.numpy()
    out = extract_patches(xn, off.numpy(), (4, 5), backend=backend)
    assert out.device.type == "cpu"
    assert_same(out, ref)
    out = extract_patches(xn, off.numpy().astype(np.int32), (4, 5), backend=backend, as_float=True)
    assert_same(out, reference(x, off, (4, 5), True))


@pytest.mark.parametrize("backend", HOST)
def test_memmap_input(backend, tmp_path):
    g = torch.Generator().manual_seed(7)
    x = random_image(g, (2, 3, 40, 50), torch.uint8)
    path = tmp_path / "x_high.u8"
    w = np.memmap(path, dtype=np.uint8, mode="w+", shape=tuple(x.shape))
    w[:] = x.numpy()
    w.flush()
    del w
    xm = np.memmap(path, dtype=np.uint8, mode="r", shape=tuple(x.shape))  # read-only
    off = random_offsets(g, 2, 20, (40, 50), (8, 9))
    out = extract_patches(xm, off, (8, 9), backend=backend)
    assert_same(out, reference(x, off, (8, 9)))
    out = extract_patches(xm, off, (8, 9), backend=backend, as_float=True)
    assert_same(out, reference(x, off, (8, 9), True))


def test_numba_reads_numpy_in_place():
    """The numba backend must not copy the (potentially huge) image."""
    x = np.random.default_rng(0).random((1, 1, 1000, 1000), dtype=np.float32)  # 4 MB
    off = np.array([[[10, 10], [500, 990]]])
    extract_patches(x, off, 16, backend="numba")  # compile / load outside the trace
    tracemalloc.start()
    try:
        extract_patches(x, off, 16, backend="numba")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100_000, peak


def test_numba_serial_path_for_small_outputs(monkeypatch):
    g = torch.Generator().manual_seed(9)
    x = random_image(g, (2, 3, 30, 30), torch.uint8)
    off = random_offsets(g, 2, 10, (30, 30), (7, 7))
    monkeypatch.setattr(numba_backend, "SERIAL_BYTES", 1 << 30)
    assert_same(extract_patches(x, off, 7, backend="numba"), reference(x, off, 7))


def test_numba_extract_into_reuses_the_output():
    g = torch.Generator().manual_seed(10)
    x = random_image(g, (2, 3, 30, 30), torch.uint8)
    impl = numba_backend.NumbaExtractor()
    out = torch.empty((2, 5, 3, 7, 7), dtype=torch.uint8)
    for _ in range(2):
        off = random_offsets(g, 2, 5, (30, 30), (7, 7))
        assert impl.extract_into(*validate(x, off, 7), out) is out
        assert_same(out, reference(x, off, 7))
    out_f = torch.empty((2, 5, 3, 7, 7), dtype=torch.float32)
    impl.extract_into(*validate(x, off, 7), out_f)
    assert_same(out_f, reference(x, off, 7, as_float=True))
    with pytest.raises(ValueError, match=r"out must be a contiguous CPU tensor of shape \(2, 5, 3, 7, 7\)"):
        impl.extract_into(*validate(x, off, 7), out[:, :4])
    with pytest.raises(ValueError, match=r"out must have x's dtype or float32"):
        impl.extract_into(*validate(x, off, 7), out.to(torch.int16))


def test_unsigned_and_narrow_offset_dtypes():
    x = torch.arange(12.0).view(1, 1, 12)
    off = np.array([[[2**64 - 1], [3], [0]]], dtype=np.uint64)  # huge: fully outside
    for backend in ["reference", *HOST]:
        out = extract_patches(x, off, 2, backend=backend)
        assert out[0, :, 0].tolist() == [[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]]
        out = extract_patches(x, torch.tensor([[[-1], [11], [5]]], dtype=torch.int8), 2, backend=backend)
        assert out[0, :, 0].tolist() == [[0.0, 0.0], [11.0, 0.0], [5.0, 6.0]]


def test_empty_batch_no_patches_and_empty_image():
    x = torch.ones(2, 3, 5, 5)
    for name in ["reference", *HOST]:
        out = extract_patches(x, torch.zeros(2, 0, 2, dtype=torch.int64), 3, backend=name)
        assert out.shape == (2, 0, 3, 3, 3)
        out = extract_patches(x[:0], torch.zeros(0, 4, 2, dtype=torch.int64), 3, backend=name)
        assert out.shape == (0, 4, 3, 3, 3)
        out = extract_patches(x[:, :, :0], torch.zeros(2, 4, 2, dtype=torch.int64), 3, backend=name)
        assert out.shape == (2, 4, 3, 3, 3) and not out.any()  # an empty image


# -- backends and registry ----------------------------------------------------------


def test_registry_has_the_backends():
    for name in ["auto", "numba", "reference", "torch"]:
        impl = extractor.build(name)
        assert isinstance(impl, Extractor) and impl.name == name


def test_auto_picks_numba_on_host_and_torch_elsewhere():
    auto = extractor.build("auto")
    assert auto.choose(torch.zeros(1, 1, 4)).name == "numba"
    assert auto.choose(np.zeros((1, 1, 4), np.float32)).name == "numba"
    assert auto.choose(torch.zeros(1, 1, 4, device="meta")).name == "torch"


def test_extractor_instance_is_callable():
    x = torch.arange(10.0).view(1, 1, 10)
    out = extractor.build("numba")(x, torch.tensor([[[8]]]), 3)
    assert out.flatten().tolist() == [8.0, 9.0, 0.0]


def test_importing_plugins_does_not_import_numba():
    code = ("import sys, ats.plugins; from ats.registry import extractor; "
            "extractor.build('numba'); assert 'numba' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_numba_kernels_are_cached_on_disk(tmp_path):
    """A second process loads the compiled kernel instead of compiling it."""
    code = (
        "import numpy as np; from ats.core.extract import extract_patches; "
        "from ats.plugins.extractors.numba import kernels; "
        "extract_patches(np.ones((1, 1, 9, 9), np.float32), np.zeros((1, 1, 2), np.int64), 3,"
        " backend='numba'); s = kernels().copy_patches.stats; "
        "print(len(s.cache_hits), len(s.cache_misses))"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", code], env=env, check=True,
                           capture_output=True, text=True).stdout.split() for _ in range(2)]
    assert runs == [["0", "1"], ["1", "0"]]


# -- user errors ---------------------------------------------------------------------

X = torch.zeros(2, 3, 8, 8)
OFF = torch.zeros(2, 4, 2, dtype=torch.int64)


@pytest.mark.parametrize(
    "x,offsets,patch,kwargs,error,match",
    [
        (torch.zeros(8, 8), OFF, 3, {}, ValueError, r"x must have shape \(B, C, \*spatial\).*got shape \(8, 8\)"),
        (torch.zeros(1, 1, 2, 2, 2, 2), OFF, 3, {}, ValueError, r"1 to 3 spatial dims"),
        ([[[1.0]]], OFF, 3, {}, TypeError, r"x must be a torch.Tensor or numpy.ndarray, got list"),
        (X.int(), OFF, 3, {}, TypeError, r"x has unsupported dtype torch.int32; expected one of uint8"),
        (X.half(), OFF, 3, {}, TypeError, r"unsupported dtype torch.float16"),
        (X.numpy().astype(">f4"), OFF, 3, {}, TypeError, r"unsupported dtype >f4"),
        (X, OFF[0], 3, {}, ValueError, r"offsets must have shape \(B, N, 2\).*got shape \(4, 2\)"),
        (X, OFF[..., :1], 3, {}, ValueError, r"offsets must have shape \(B, N, 2\).*\(2, 4, 1\)"),
        (X, OFF[:1], 3, {}, ValueError, r"offsets and x have different batch sizes: 1 vs 2"),
        (X, OFF.float(), 3, {}, TypeError, r"offsets must be an integer tensor, got dtype torch.float32"),
        (X, OFF.numpy().astype(np.float64), 3, {}, TypeError, r"offsets must be integers, got dtype float64"),
        (X, OFF.bool(), 3, {}, TypeError, r"offsets must be an integer tensor"),
        (X, "0,0", 3, {}, TypeError, r"offsets must be a torch.Tensor or numpy.ndarray"),
        (X, OFF, 0, {}, ValueError, r"patch_size must be positive, got \(0, 0\)"),
        (X, OFF, (3, -1), {}, ValueError, r"patch_size must be positive, got \(3, -1\)"),
        (X, OFF, (3, 3, 3), {}, ValueError, r"one entry per spatial dim of x \(2\), got 3"),
        (X, OFF, 2.5, {}, TypeError, r"patch_size must be an int or a sequence of ints"),
        (X, OFF, (3, 2.0), {}, TypeError, r"patch_size must be an int or a sequence of ints"),
        (X, OFF, 3, {"backend": "nope"}, ValueError, r"unknown extractor 'nope'; known: .*numba.*reference.*torch"),
        (X, OFF, 3, {"backend": "numbaa"}, ValueError, r"Did you mean 'numba'"),
        (X, OFF, 3, {"backend": 3}, TypeError, r"backend must be an extractor name"),
        (X, OFF, 3, {"as_float": "yes"}, TypeError, r"as_float must be a bool"),
        (torch.zeros(2, 3, 8, 8, device="meta"), OFF, 3, {"backend": "numba"}, ValueError,
         r"extractor 'numba' cannot handle x: .*host memory.*meta"),
    ],
)
def test_user_errors_are_clear(x, offsets, patch, kwargs, error, match):
    with pytest.raises(error, match=match):
        extract_patches(x, offsets, patch, **kwargs)


@pytest.mark.parametrize("backend", ["torch", "reference", "auto"])
@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_offsets_on_another_device_are_moved(backend):
    g = torch.Generator().manual_seed(8)
    x = random_image(g, (2, 3, 16, 16), torch.float32)
    off = random_offsets(g, 2, 5, (16, 16), (4, 4))
    out = extract_patches(x.cuda(), off, 4, backend=backend)  # offsets on the CPU
    assert out.device.type == "cuda"
    assert_same(out, reference(x, off, 4))
    out = extract_patches(x, off.cuda(), 4, backend="numba")  # offsets on the GPU
    assert_same(out, reference(x, off, 4))


@pytest.mark.parametrize("backend", ["numba", "torch", "reference", "auto"])
@pytest.mark.parametrize("as_float", [False, True])
def test_out_is_filled_in_place_and_equals_a_fresh_result(backend, as_float):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 3, 20, 30), generator=g, dtype=torch.uint8)
    offsets = torch.randint(-8, 28, (2, 4, 2), generator=g)
    fresh = extract_patches(x, offsets, (6, 9), backend=backend, as_float=as_float)
    out = torch.full_like(fresh, 7)
    result = extract_patches(x, offsets, (6, 9), backend=backend, as_float=as_float, out=out)
    assert result.data_ptr() == out.data_ptr()
    torch.testing.assert_close(out, fresh, rtol=0, atol=0)


def test_out_of_the_wrong_shape_or_dtype_is_refused():
    x = torch.zeros(1, 1, 10, 10)
    offsets = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"out must be a contiguous torch.float32 tensor of shape \(1, 2, 1, 3, 3\)"):
        extract_patches(x, offsets, 3, out=torch.zeros(1, 2, 1, 3, 4))
    with pytest.raises(ValueError, match="out must be a contiguous"):
        extract_patches(x, offsets, 3, out=torch.zeros(1, 2, 1, 3, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="out must be a torch.Tensor"):
        extract_patches(x, offsets, 3, out=np.zeros((1, 2, 1, 3, 3), np.float32))
