"""Images larger than memory: lazy, picklable image sources (docs/sources.md).

* :class:`Source`: an opened image (shape, dtype, pyramid levels, tiles);
  the formats are plugins of :data:`ats.registry.source`, opened by
  :func:`open_source`.
* :func:`read_patches`: patches of a batch of sources of any sizes, reading
  only the tiles they touch through a decoded-tile cache (:class:`TileCache`).
* :func:`low_view`: a low view from the nearest pyramid level, streamed over
  tiles, cached on disk (:class:`LowViewCache`).
* :class:`SourceBatch`, :class:`Framed`: the batch that replaces the stacked
  ``x_high`` tensor, and its geometry (:mod:`ats.sources.frames`).
"""

from ats.sources.base import Source, SourceError, close_handles
from ats.sources.batch import Framed, SourceBatch, as_source_batch, is_sources
from ats.sources.cache import TileCache, default_cache
from ats.sources.lowview import LowViewCache, choose_level, fit_size, low_view
from ats.sources.open import open_source, supported_formats
from ats.sources.read import read_patches

__all__ = [
    "Framed",
    "LowViewCache",
    "Source",
    "SourceBatch",
    "SourceError",
    "TileCache",
    "as_source_batch",
    "choose_level",
    "close_handles",
    "default_cache",
    "fit_size",
    "is_sources",
    "low_view",
    "open_source",
    "read_patches",
    "supported_formats",
]
