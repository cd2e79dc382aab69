"""What the selection models share: the input checks, and reading patches
onto the networks' device, from a tensor or array through the extraction
backends, or from a batch of image sources (docs/sources.md) through
:func:`ats.sources.read_patches`."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ats.core.extract import Extractor

__all__ = ["check_source_inputs", "check_tensor_inputs", "is_source_input", "read_patches",
           "read_source_patches"]


def is_source_input(x_high: object) -> bool:
    """``x_high`` is a batch of image sources (a ``SourceBatch`` or a list of
    sources or framed sources), not a tensor or array."""
    if isinstance(x_high, (Tensor, np.ndarray)):
        return False
    from ats.sources.batch import is_sources

    return is_sources(x_high)


def check_tensor_inputs(model: str, x_low: Tensor, x_high: object) -> None:
    """x_low a (B, C, *low) tensor and x_high a (B, C, *high) tensor or array."""
    if not isinstance(x_high, (Tensor, np.ndarray)):
        raise ValueError(f"the {model} model reads x_high as a (B, C, *high) tensor or numpy "
                         f"array, or a batch of image sources (ats.sources.SourceBatch), got "
                         f"{type(x_high).__name__}")
    if not isinstance(x_low, Tensor) or x_low.ndim != len(x_high.shape) or \
            x_low.shape[0] != x_high.shape[0]:
        raise ValueError(f"x_low {tuple(getattr(x_low, 'shape', ()))} and x_high "
                         f"{tuple(x_high.shape)} must be (B, C, *space) with the same B and dims")


def check_source_inputs(model: str, x_low: Tensor, x_high: object, patch: Sequence[int]):
    """x_high a batch of B 2-D image sources, x_low their (B, C, h, w) low
    views (each item's in the top-left ``low_sizes[b]``, the rest padding),
    and a ``patch`` (ph, pw) that fits every image.

    Returns:
        the :class:`ats.sources.SourceBatch`.
    """
    from ats.sources.batch import as_source_batch

    batch = as_source_batch(x_high)
    if not isinstance(x_low, Tensor) or x_low.ndim != 4:
        raise ValueError(f"with image sources as x_high, the {model} model needs x_low as a "
                         f"(B, C, h, w) tensor, got "
                         f"{getattr(x_low, 'shape', type(x_low).__name__)}")
    if len(batch) != x_low.shape[0]:
        raise ValueError(f"x_low and x_high must have the same batch size, got "
                         f"{x_low.shape[0]} and {len(batch)} sources")
    for b, s in enumerate(batch):
        if any(p > h for p, h in zip(patch, s.shape[1:])):
            raise ValueError(f"patch_size {tuple(patch)} is larger than the image of item {b}, "
                             f"{tuple(s.shape[1:])}")
    return batch


def read_patches(extractor: Extractor, x_high: Tensor | np.ndarray | Sequence, offsets: Tensor,
                 patch: Sequence[int], like: Tensor) -> Tensor:
    """(B, N, C, *patch) patches at ``offsets`` (B, N, d), as ``like``'s dtype on
    its device; integer images scaled to [0, 1]. A batch of sources is read
    by :func:`read_source_patches` (``extractor`` unused)."""
    if is_source_input(x_high):
        return read_source_patches(x_high, offsets, patch, like)
    integer = not (x_high.is_floating_point() if isinstance(x_high, Tensor)
                   else np.issubdtype(x_high.dtype, np.floating))
    where = x_high.device if isinstance(x_high, Tensor) else torch.device("cpu")
    patches = extractor(x_high, offsets.to(where), tuple(patch), as_float=integer)
    return patches.to(device=like.device, dtype=like.dtype)


def read_source_patches(sources: Sequence, offsets: Tensor, patch: Sequence[int],
                        like: Tensor) -> Tensor:
    """:func:`read_patches` of a batch of 2-D sources: ``offsets`` (B, N, 2) in
    each item's own full-resolution pixels, read as float32 in [0, 1] by
    :func:`ats.sources.read_patches` (only the tiles the patches touch; any
    offset legal, zeros outside), then as ``like``'s dtype on its device."""
    from ats.sources.batch import as_source_batch
    from ats.sources.read import read_patches as read_from_sources

    patches = read_from_sources(list(as_source_batch(sources)), offsets.cpu(), tuple(patch),
                                as_float=True)
    return patches.to(device=like.device, dtype=like.dtype)
