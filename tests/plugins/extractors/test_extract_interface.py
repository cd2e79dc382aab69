"""Patch extraction: what every backend shares (ats/core/extract.py and the
Extractor base class): argument checks, offsets of any integer dtype clamped
alike on every device, ``out`` buffers, the registry and ``auto``'s
delegation. Each backend's own results are in test_extract_backends.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ats.core.extract import (
    Extractor,
    clamp_offsets_host,
    clamp_offsets_torch,
    extract_patches,
    validate,
)
from ats.plugins.extractors.reference import ReferenceExtractor
from ats.plugins.extractors.torch import TorchExtractor
from ats.registry import extractor
from tests.plugins.extractors.cases import (
    assert_same,
    random_image,
    random_offsets,
    reference,
)

HOST = ["numba", "torch", "auto"]


def test_registry_has_the_backends():
    for name in ["auto", "numba", "reference", "torch"]:
        impl = extractor.build(name)
        assert isinstance(impl, Extractor) and impl.name == name


def test_extractor_instance_is_callable():
    x = torch.arange(10.0).view(1, 1, 10)
    out = extractor.build("numba")(x, torch.tensor([[[8]]]), 3)
    assert out.flatten().tolist() == [8.0, 9.0, 0.0]


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


def test_out_of_the_wrong_shape_or_dtype_is_refused():
    x = torch.zeros(1, 1, 10, 10)
    offsets = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"out must be a contiguous torch.float32 tensor of shape \(1, 2, 1, 3, 3\)"):
        extract_patches(x, offsets, 3, out=torch.zeros(1, 2, 1, 3, 4))
    with pytest.raises(ValueError, match="out must be a contiguous"):
        extract_patches(x, offsets, 3, out=torch.zeros(1, 2, 1, 3, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="out must be a torch.Tensor"):
        extract_patches(x, offsets, 3, out=np.zeros((1, 2, 1, 3, 3), np.float32))


# -- offsets: one clamp on the host, its twin on devices ---------------------------


def _offset_cases():
    g = torch.Generator().manual_seed(20)
    off = random_offsets(g, 3, 17, (13, 9), (4, 6))
    big = np.array([[[2**64 - 1, 5], [2**63, 2**63 - 1], [3, 0]]], dtype=np.uint64)
    return [
        ("int64 tensor", off, (13, 9), (4, 6)),
        ("int32 numpy", off.numpy().astype(np.int32), (13, 9), (4, 6)),
        ("int8 tensor", torch.tensor([[[-128, 127], [-1, 3]]], dtype=torch.int8), (5, 200), (2, 3)),
        ("uint8 numpy", np.array([[[255, 0]]], dtype=np.uint8), (300, 2), (4, 4)),
        ("uint64 numpy", big, (7, 8), (2, 3)),
        ("uint64 tensor", torch.from_numpy(big.astype(np.int64)).to(torch.uint64)
         if hasattr(torch, "uint64") else big, (7, 8), (2, 3)),
        ("extremes", torch.tensor([[[-(2**63), 2**63 - 1]]]), (7, 8), (2, 3)),
    ]


@pytest.mark.parametrize("name,offsets,sizes,patch", _offset_cases(),
                         ids=[c[0] for c in _offset_cases()])
def test_the_device_clamp_equals_the_host_clamp_on_the_cpu(name, offsets, sizes, patch):
    """The clamp used for CUDA (and any non-CPU) images runs here on the CPU:
    it must give exactly the host path's int64 offsets, also for uint64
    values past the int64 range (which a plain cast wraps to negative)."""
    host = clamp_offsets_host(offsets, sizes, patch)
    twin = clamp_offsets_torch(offsets, sizes, patch, torch.device("cpu"))
    assert host.dtype == twin.dtype == torch.int64 and twin.is_contiguous()
    assert torch.equal(twin, host)
    # and what both must be: every start clamped into [-patch, size]
    values = np.asarray(offsets.numpy() if isinstance(offsets, torch.Tensor) else offsets)
    expected = np.clip(np.minimum(values.astype(object), 2**63 - 1),
                       [-p for p in patch], list(sizes)).astype(np.int64)
    assert host.tolist() == expected.tolist()


def test_images_off_the_cpu_take_the_device_clamp():
    x = torch.zeros(1, 1, 12, device="meta")
    offsets, = validate(x, np.array([[[2**64 - 1]]], dtype=np.uint64), 2)[1:2]
    assert offsets.device.type == "meta" and offsets.dtype == torch.int64
    on_cpu = validate(torch.zeros(1, 1, 12), np.array([[[2**64 - 1]]], dtype=np.uint64), 2)[1]
    assert on_cpu.tolist() == [[[12]]]  # past the end: a patch of zeros


# -- extract_into: the base class's copy ------------------------------------------------


class _ExtractOnly(Extractor):
    """A backend with only ``extract``: the base class supplies extract_into."""

    name = "extract-only"

    def __init__(self):
        self.calls = []

    def extract(self, x, offsets, patch_size, as_float):
        self.calls.append(as_float)
        return ReferenceExtractor().extract(x, offsets, patch_size, as_float)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.uint16, torch.float64], ids=str)
def test_the_base_extract_into_fills_out_with_extracts_result(dtype):
    g = torch.Generator().manual_seed(21)
    x = random_image(g, (2, 3, 14, 11), dtype)
    off = random_offsets(g, 2, 5, (14, 11), (4, 3))
    backend = _ExtractOnly()
    for out_dtype, as_float in ((dtype, False), (torch.float32, True)):
        if out_dtype == torch.float32 and dtype == torch.float32:
            continue
        out = torch.full((2, 5, 3, 4, 3), 7, dtype=out_dtype)
        result = extract_patches(x, off, (4, 3), backend=backend, as_float=as_float, out=out)
        assert result is out and backend.calls[-1] is as_float
        assert_same(out, reference(x, off, (4, 3), as_float))


@pytest.mark.parametrize("backend", [ReferenceExtractor(), TorchExtractor()], ids=lambda b: b.name)
def test_backends_without_their_own_extract_into_use_the_base_copy(backend):
    assert type(backend).extract_into is Extractor.extract_into
    g = torch.Generator().manual_seed(22)
    x = random_image(g, (2, 1, 9, 9), torch.uint8)
    off = random_offsets(g, 2, 4, (9, 9), (3, 3))
    out = torch.empty((2, 4, 1, 3, 3))
    assert extract_patches(x, off, 3, backend=backend, as_float=True, out=out) is out
    assert_same(out, reference(x, off, 3, as_float=True))


def test_auto_extract_into_delegates_to_the_backend_it_chooses():
    """auto's extract_into (on CUDA: torch's, the base copy) runs here with the
    torch backend standing in for numba."""
    auto = extractor.build("auto")
    auto._backends["numba"] = chosen = _ExtractOnly()
    g = torch.Generator().manual_seed(23)
    x = random_image(g, (1, 2, 8, 8), torch.uint8)
    off = random_offsets(g, 1, 3, (8, 8), (3, 3))
    out = torch.empty((1, 3, 2, 3, 3))
    assert extract_patches(x, off, 3, backend=auto, as_float=True, out=out) is out
    assert chosen.calls == [True]
    assert_same(out, reference(x, off, 3, as_float=True))
