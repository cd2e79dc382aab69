"""Inputs and the oracle shared by the extraction tests: random images and
offsets (inside, across every border, far outside) and the reference loop."""

from __future__ import annotations

import numpy as np
import torch

from ats.core.extract import extract_patches

DTYPES = [torch.uint8, torch.uint16, torch.float32, torch.float64]
NP_DTYPES = {torch.uint8: np.uint8, torch.uint16: np.uint16,
             torch.float32: np.float32, torch.float64: np.float64}


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
    """The reference backend's patches, computed on the CPU."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
    if isinstance(offsets, torch.Tensor):
        offsets = offsets.cpu()
    return extract_patches(x, offsets, patch, backend="reference", as_float=as_float)


def assert_same(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert out.dtype == ref.dtype
    assert out.shape == ref.shape
    assert torch.equal(out.cpu(), ref), (out.cpu() != ref).nonzero()[:5]
