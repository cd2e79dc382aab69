"""The ``torch`` extractor: vectorised indexing, on CUDA or CPU.

No Python loop over patches and no padded copy of the image:

* Patches entirely inside the image (the common case) are gathered row by
  row: an overlapping strided view of x holds every possible patch row
  (``x.as_strided((M, patch_x), (1, stride_x))``), and one ``index_select``
  with one linear index per patch row copies whole rows into the output.
  Its index tensor is ``patch_x`` times smaller than the output.
* Patches crossing the border are redone with per-dim index grids clamped
  into the image, one gather, and a mask that zeroes what lies outside
  (docs/geometry.md, "Patch extraction").

uint16, which has few torch kernels, is moved as int16 bits. The result has
no autograd history, like the other backends (the original op has no
gradient either; x_high is an input).
"""

from __future__ import annotations

import torch

from ats.core.extract import Array, Extractor, as_torch, to_float
from ats.registry import extractor


@extractor.register("torch")
class TorchExtractor(Extractor):
    """Vectorised torch indexing; any device, 1-3 spatial dims."""

    name = "torch"

    def extract(
        self,
        x: Array,
        offsets: torch.Tensor,
        patch_size: tuple[int, ...],
        as_float: bool,
    ) -> torch.Tensor:
        x = as_torch(x).detach()
        # Bit copies only, so uint16 can travel as int16 (more kernels exist).
        work = x.view(torch.int16) if x.dtype == torch.uint16 else x
        out = _extract(work, offsets, patch_size).view(x.dtype)
        return to_float(out) if as_float else out


def _extract(x: torch.Tensor, offsets: torch.Tensor, patch: tuple[int, ...]) -> torch.Tensor:
    """(B, C, *S) x, (B, N, d) offsets -> (B, N, C, *patch) patches."""
    B, N, d = offsets.shape
    C, sizes = x.shape[1], tuple(x.shape[2:])
    if any(s < p for s, p in zip(sizes, patch)):
        # No patch fits inside the image: every patch crosses the border.
        b = torch.arange(B, device=x.device).repeat_interleave(N)
        return _gather_masked(x, offsets.reshape(B * N, d), b, patch).view(B, N, C, *patch)

    out = torch.empty((B, N, C, *patch), dtype=x.dtype, device=x.device)
    hi = torch.tensor(sizes, device=x.device) - torch.tensor(patch, device=x.device)
    # Gather every patch with its start clamped inside the image (right for
    # the inside ones), then redo the border-crossing ones.
    _gather_rows(x, torch.minimum(offsets.clamp(min=0), hi), patch, out)
    crossing = ((offsets < 0) | (offsets > hi)).any(-1).flatten().nonzero().squeeze(1)
    if crossing.numel():
        out.view(B * N, C, *patch)[crossing] = _gather_masked(
            x, offsets.reshape(B * N, d)[crossing], crossing // N, patch
        )
    return out


def _gather_rows(
    x: torch.Tensor, starts: torch.Tensor, patch: tuple[int, ...], out: torch.Tensor
) -> None:
    """Fill ``out`` (B, N, C, *patch) with patches that lie inside ``x``."""
    B, N, d = starts.shape
    C = x.shape[1]
    stride = x.stride()
    dev = x.device
    width = patch[-1]
    # Linear element offset (from x's first element) of each patch row's first
    # pixel, shape (B, N, C, *patch[:-1]); built by broadcasting small terms.
    ones = (1,) * (d - 1)
    lin = (
        torch.arange(B, device=dev).view(B, 1, 1, *ones) * stride[0]
        + torch.arange(C, device=dev).view(1, 1, C, *ones) * stride[1]
        + starts[..., -1].view(B, N, 1, *ones) * stride[-1]
    )
    for i in range(d - 1):
        shape = [1] * (d - 1)
        shape[i] = patch[i]
        rows = starts[..., i].view(B, N, 1, *ones) + torch.arange(patch[i], device=dev).view(
            1, 1, 1, *shape
        )
        lin = lin + rows * stride[2 + i]
    # Every patch row of x as a row of this overlapping view.
    n_rows = sum((s - 1) * st for s, st in zip(x.shape, stride)) - (width - 1) * stride[-1] + 1
    windows = x.as_strided((n_rows, width), (1, stride[-1]), x.storage_offset())
    torch.index_select(windows, 0, lin.reshape(-1), out=out.view(-1, width))


def _gather_masked(
    x: torch.Tensor, offsets: torch.Tensor, b: torch.Tensor, patch: tuple[int, ...]
) -> torch.Tensor:
    """(K, d) offsets of patches of batch items ``b`` (K,) -> (K, C, *patch), 0 outside."""
    K, d = offsets.shape
    C, sizes = x.shape[1], x.shape[2:]
    dev = x.device
    ones = (1,) * d
    index = [b.view(K, 1, *ones), torch.arange(C, device=dev).view(1, C, *ones)]
    inside = torch.ones((K, 1, *patch), dtype=torch.bool, device=dev)
    for i in range(d):
        shape = [1] * d
        shape[i] = patch[i]
        coord = offsets[:, i].view(K, 1, *ones) + torch.arange(patch[i], device=dev).view(
            1, 1, *shape
        )
        inside = inside & (coord >= 0) & (coord < sizes[i])
        index.append(coord.clamp(0, sizes[i] - 1))
    patches = x[tuple(index)]
    return patches.masked_fill_(~inside, 0)
