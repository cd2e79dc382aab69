"""Patch extraction backends: each against the reference loop (docs/geometry.md,
"Patch extraction").

The reference itself is pinned by hand-computed cases; the fast backends
(numba, torch, auto) must equal it exactly on random cases covering 1-3
spatial dims, non-square patches, patches inside, across every border and
far outside, the four dtypes, ``as_float``, numpy / memmap input, tensors
requiring grad and non-contiguous input, on CPU and (when present) CUDA.
What every backend shares (argument checks, offsets, ``out``, the registry)
is in test_extract_interface.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ats.core.extract import extract_patches, validate
from ats.plugins.extractors import numba as numba_backend
from ats.registry import extractor
from tests.plugins.extractors.cases import (
    DTYPES,
    assert_same,
    random_image,
    random_offsets,
    reference,
)

cuda = pytest.mark.cuda  # skipped without CUDA (tests/conftest.py)

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


@pytest.fixture(autouse=True)
def numba_always_parallel(monkeypatch):
    """Small outputs normally run the numba kernel on one thread; the tests'
    outputs are small, so force the thread pool to cover the parallel path."""
    monkeypatch.setattr(numba_backend, "SERIAL_BYTES", 0)


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
    assert out.device == x.device
    assert not out.cpu().any()  # on the host: CUDA has no any() for uint16 (torch 2.11)


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8], ids=str)
def test_numba_reads_the_image_in_place(monkeypatch, tmp_path, dtype):
    """The (potentially huge, memory-mapped) image is never copied: the
    kernel reads the caller's own memory, for numpy arrays, memmaps, tensors
    and strided views, with and without the float conversion."""
    real = numba_backend.kernels()
    read = []

    def spy(name):
        def kernel(x, *args):
            read.append(x)
            return getattr(real, name)(x, *args)
        return kernel

    monkeypatch.setattr(numba_backend, "kernels", lambda: SimpleNamespace(
        copy_patches=spy("copy_patches"), scale_patches=spy("scale_patches")))
    g = torch.Generator().manual_seed(11)
    x = random_image(g, (2, 3, 40, 50), dtype).numpy()
    path = tmp_path / "x.bin"
    mm = np.memmap(path, dtype=x.dtype, mode="w+", shape=x.shape)
    mm[:] = x
    mm.flush()
    images = {"numpy": x, "memmap": np.memmap(path, dtype=x.dtype, mode="r", shape=x.shape),
              "tensor": torch.from_numpy(x), "strided view": x[:, :, ::2, 1::3]}
    for name, image in images.items():
        base = np.asarray(image)
        off = random_offsets(g, 2, 6, base.shape[2:], (5, 4))
        for as_float in (False, True):
            read.clear()
            out = extract_patches(image, off, (5, 4), backend="numba", as_float=as_float)
            assert_same(out, reference(torch.from_numpy(np.ascontiguousarray(base)), off, (5, 4),
                                       as_float))
            assert len(read) == 1 and np.may_share_memory(read[0], base), (name, as_float)


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


# -- backends and registry ----------------------------------------------------------


def test_auto_picks_numba_on_host_and_torch_elsewhere():
    auto = extractor.build("auto")
    assert auto.choose(torch.zeros(1, 1, 4)).name == "numba"
    assert auto.choose(np.zeros((1, 1, 4), np.float32)).name == "numba"
    assert auto.choose(torch.zeros(1, 1, 4, device="meta")).name == "torch"


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


@pytest.mark.parametrize("backend", ["torch", "reference", "auto"])
@pytest.mark.cuda
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
