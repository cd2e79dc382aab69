"""A batch of sources in place of the stacked ``x_high`` tensor.

A dataset item carries its image as a :class:`Framed` source: the
:class:`~ats.sources.Source` and the part of the item's (padded) ``x_low``
that shows it. Collating items keeps the sources as a list, a
:class:`SourceBatch`, never stacking pixels: ``default_collate`` knows both
types (registered in its table of collate functions when this module is
imported, so DataLoader workers, the engine and the pictures all batch them
alike). :class:`ats.AttentionSampling` takes a ``SourceBatch`` (or a plain
list of sources) as ``x_high``; each item's geometry maps to its own frame
(:mod:`ats.sources.frames`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ats.sources.base import Source

__all__ = ["Framed", "SourceBatch", "as_source_batch", "is_sources"]


@dataclass(frozen=True)
class Framed:
    """A source and the size ``(h, w)`` of the part of its item's ``x_low``
    that shows it (the rest of ``x_low`` is padding)."""

    source: Source
    low_size: tuple[int, int]


class SourceBatch(Sequence[Source]):
    """B sources (any sizes, one channel count and dtype) and, optionally,
    the valid ``(h_b, w_b)`` part of each item's low view.

    Args:
        sources: the images.
        low_sizes: (B, 2) integers; None: every item fills the whole ``x_low``.
    """

    def __init__(self, sources: Sequence[Source], low_sizes: Tensor | Sequence | None = None) -> None:
        self.sources = list(sources)
        for i, s in enumerate(self.sources):
            if not isinstance(s, Source):
                raise TypeError(f"x_high[{i}] must be an ats.sources.Source, got "
                                f"{type(s).__name__}")
        if low_sizes is not None:
            low_sizes = torch.as_tensor(low_sizes, dtype=torch.int64).reshape(-1, 2)
            if low_sizes.shape[0] != len(self.sources) or bool((low_sizes < 1).any()):
                raise ValueError(f"low_sizes must be {len(self.sources)} positive (h, w) pairs, "
                                 f"got {low_sizes.tolist()}")
        self.low_sizes = low_sizes

    @property
    def high_sizes(self) -> Tensor:
        """(B, 2) int64: each image's full-resolution (H, W)."""
        return torch.tensor([s.shape[1:] for s in self.sources], dtype=torch.int64).reshape(-1, 2)

    @property
    def shape(self) -> tuple[int, ...]:
        """``(B, C, H, W)`` with the largest H and W of the batch (the shape
        of a tensor that could hold every image)."""
        C = self.sources[0].channels if self.sources else 0
        hw = self.high_sizes.amax(0).tolist() if self.sources else [0, 0]
        return (len(self.sources), C, *hw)

    def low_sizes_for(self, x_low: Tensor) -> Tensor:
        """(B, 2) valid low-view sizes: the given ones (checked to fit
        ``x_low``), or x_low's whole size for every item."""
        B, (h, w) = len(self), x_low.shape[-2:]
        if self.low_sizes is None:
            return torch.tensor([[h, w]] * B, dtype=torch.int64).reshape(-1, 2)
        if bool((self.low_sizes > torch.tensor([h, w])).any()):
            raise ValueError(f"the low sizes {self.low_sizes.tolist()} do not fit x_low "
                             f"{tuple(x_low.shape)}")
        return self.low_sizes

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: Any) -> Any:
        return self.sources[i]

    def __iter__(self) -> Iterator[Source]:
        return iter(self.sources)

    def __repr__(self) -> str:
        return f"SourceBatch({len(self)} sources, shape {self.shape})"


def is_sources(x_high: object) -> bool:
    """``x_high`` is a batch of sources (a SourceBatch, or a list of sources)."""
    if isinstance(x_high, SourceBatch):
        return True
    return isinstance(x_high, (list, tuple)) and bool(x_high) and \
        all(isinstance(s, (Source, Framed)) for s in x_high)


def as_source_batch(x_high: SourceBatch | Sequence[Source | Framed]) -> SourceBatch:
    """A :class:`SourceBatch` of sources or framed sources."""
    if isinstance(x_high, SourceBatch):
        return x_high
    items = list(x_high)
    if items and all(isinstance(f, Framed) for f in items):
        return SourceBatch([f.source for f in items], [f.low_size for f in items])
    if any(isinstance(f, Framed) for f in items):
        raise TypeError("x_high mixes framed and plain sources; frame all of them or none")
    return SourceBatch(items)


def _collate(batch: list, *, collate_fn_map: Any = None) -> SourceBatch:
    return as_source_batch(batch)


def _register_collate() -> None:
    """Teach ``torch.utils.data.default_collate`` to keep sources as a list
    (its documented extension point, ``default_collate_fn_map``)."""
    from torch.utils.data._utils.collate import default_collate_fn_map

    for kind in (Source, Framed):
        default_collate_fn_map.setdefault(kind, _collate)


_register_collate()
