"""Iterative patch selection over a dense patch grid (docs/methods.md, "IPS").

Bergner et al., "Iterative Patch Selection for High-Resolution Image
Recognition" (ICLR 2023): every patch of a grid over the full-resolution
image is scored, I patches at a time without gradients, and the M best seen
so far are kept. Memory is bounded by M + I patches, whatever the number of
patches: the grid's offsets are computed chunk by chunk, never listed whole,
and the buffer holds only the M best scores and their grid indices.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["ItemGrids", "PatchGrid", "iterative_top_m"]


class PatchGrid:
    """The top-left corners of patches of ``patch`` pixels every ``stride``
    pixels over an image of ``shape`` (no padding: every patch lies inside).

    Positions are numbered row-major (the first spatial dim slowest).
    """

    def __init__(self, shape: Sequence[int], patch: Sequence[int], stride: Sequence[int]) -> None:
        if not len(shape) == len(patch) == len(stride):
            raise ValueError(f"shape {tuple(shape)}, patch {tuple(patch)} and stride "
                             f"{tuple(stride)} must have as many dims")
        if any(p > s for p, s in zip(patch, shape)):
            raise ValueError(f"patch {tuple(patch)} is larger than the image {tuple(shape)}")
        if any(s < 1 for s in stride):
            raise ValueError(f"stride must be positive, got {tuple(stride)}")
        self.shape, self.patch, self.stride = tuple(shape), tuple(patch), tuple(stride)
        #: patches per spatial dim
        self.counts = tuple((s - p) // t + 1 for s, p, t in zip(shape, patch, stride))
        self.size = math.prod(self.counts)

    def offsets(self, index: Tensor) -> Tensor:
        """Grid indices (any shape) -> their top-left corners (*shape, d), int64."""
        cells = torch.stack(torch.unravel_index(index, self.counts), dim=-1)
        return cells * torch.tensor(self.stride, device=index.device)

    def inside(self, index: Tensor) -> Tensor:
        """Which grid indices (any shape) are patches of the grid: a bool tensor."""
        return (index >= 0) & (index < self.size)

    def __repr__(self) -> str:
        return f"PatchGrid(shape={self.shape}, patch={self.patch}, stride={self.stride}, " \
               f"counts={self.counts})"


class ItemGrids:
    """One :class:`PatchGrid` per item of a batch of images of their own sizes.

    Item b's patches are numbered row-major over its own grid, ``0 ..
    sizes[b] - 1``; a batch scans ``size`` = the largest grid's positions, and
    an index past an item's grid is no patch of it (:meth:`inside`).

    Args:
        shapes: (B, d) each image's spatial shape.
        patch, stride: as for :class:`PatchGrid`, one for the batch.
    """

    def __init__(self, shapes: Sequence[Sequence[int]], patch: Sequence[int],
                 stride: Sequence[int]) -> None:
        self.grids = [PatchGrid(shape, patch, stride) for shape in shapes]
        if not self.grids:
            raise ValueError("shapes must hold at least one image")
        self.patch, self.stride = tuple(patch), tuple(stride)
        #: (B, d) patches per spatial dim of each item; (B,) patches of each item
        self.counts = torch.tensor([g.counts for g in self.grids], dtype=torch.int64)
        self.sizes = torch.tensor([g.size for g in self.grids], dtype=torch.int64)
        self.size = int(self.sizes.max())

    def inside(self, index: Tensor) -> Tensor:
        """(B, n) grid indices -> (B, n) bool: a patch of that item's grid."""
        return (index >= 0) & (index < self.sizes.to(index.device)[:, None])

    def offsets(self, index: Tensor) -> Tensor:
        """(B, n) grid indices -> (B, n, d) top-left corners in each item's
        pixels, int64; an index past an item's grid gets ``-patch``, wholly
        outside its image (it reads as zeros, touching no tile)."""
        counts = self.counts.to(index.device)[:, None, :]  # (B, 1, d)
        inside = self.inside(index)
        rest, cells = index.clamp(min=0), []
        for i in reversed(range(counts.shape[-1])):  # row-major: the last dim fastest
            cells.append(rest % counts[..., i])
            rest = rest // counts[..., i]
        stride = torch.tensor(self.stride, device=index.device)
        corners = torch.stack(cells[::-1], dim=-1) * stride
        outside = -torch.tensor(self.patch, device=index.device)
        return torch.where(inside.unsqueeze(-1), corners, outside)

    def __repr__(self) -> str:
        return f"ItemGrids({len(self.grids)} images, patch={self.patch}, " \
               f"stride={self.stride}, sizes={self.sizes.tolist()})"


def iterative_top_m(score: Callable[[int, int], Tensor], n: int, m: int, chunk: int
                    ) -> tuple[Tensor, Tensor]:
    """The ``m`` best of ``n`` positions, scoring ``chunk`` positions at a time.

    Args:
        score: ``score(start, stop)`` -> (B, stop - start) scores of positions
            ``start..stop-1`` (called without gradients is the caller's choice).
        n: positions in all; m: how many to keep (``min(m, n)`` are);
            chunk: positions scored per call (I).

    Returns:
        ``(indices, scores)``, both (B, min(m, n)), by decreasing score: the
        same positions as the top m of one pass over all n scores, for any
        ``chunk`` (scores depend on the position only, not on the others
        scored beside it).
    """
    if n < 1 or m < 1 or chunk < 1:
        raise ValueError(f"n, m and chunk must be positive, got n={n}, m={m}, chunk={chunk}")
    keep = min(m, n)
    best_scores = best_index = None
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        new = score(start, stop)
        index = torch.arange(start, stop, device=new.device).expand(new.shape[0], -1)
        if best_scores is not None:
            new = torch.cat([best_scores, new], dim=1)
            index = torch.cat([best_index, index], dim=1)
        top = torch.topk(new, min(keep, new.shape[1]), dim=1)
        best_scores, best_index = top.values, index.gather(1, top.indices)
    return best_index, best_scores
