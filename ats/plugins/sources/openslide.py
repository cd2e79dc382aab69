"""The ``openslide`` source: whole-slide formats through OpenSlide.

Aperio (.svs), Hamamatsu (.ndpi, .vms, .vmu), MIRAX (.mrxs), Leica (.scn),
Ventana (.bif), Philips TIFF and generic tiled TIFF files, read by
``openslide-python`` with the library from ``openslide-bin`` (the optional
extra ``pip install 'ats[slides]'``). OpenSlide has no tile interface, so a
tile is a region of :data:`TILE` pixels of one level read with
``read_region``; OpenSlide handles are thread-safe. Slides are RGB ``uint8``
(OpenSlide's premultiplied alpha: transparent pixels, outside the scanned
regions, are 0). Plain ``.tif`` files go to the ``tiff`` source first; name
this one to read them through OpenSlide (``open_source(path, plugin="openslide")``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ats.registry import source
from ats.sources.base import Source, SourceError

__all__ = ["OpenSlideSource", "TILE", "openslide_module"]

#: the side of the regions read as tiles, in pixels of their level
TILE = 512


def openslide_module() -> Any:
    """The ``openslide`` module, or an ImportError saying how to install it."""
    try:
        import openslide
    except ImportError:
        raise ImportError("whole-slide files need OpenSlide: pip install 'ats[slides]' "
                          "(openslide-python and openslide-bin)") from None
    return openslide


@source.register("openslide")
class OpenSlideSource(Source):
    """A whole-slide image read through OpenSlide (RGB, uint8, its levels)."""

    name = "openslide"
    formats = ("whole-slide images through OpenSlide (.svs, .ndpi, .mrxs, .scn, .vms, .vmu, "
               ".bif, .svslide; needs ats[slides])")
    suffixes = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")
    priority = 50

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        if not Path(self.path).is_file():
            raise FileNotFoundError(f"image file not found: {self.path}")
        openslide = openslide_module()
        try:
            slide = self.handle()
        except openslide.OpenSlideError as exc:
            raise SourceError(f"cannot read {self.path} with OpenSlide: {exc}") from exc
        shapes = [(h, w) for w, h in slide.level_dimensions]
        tiles = [(min(TILE, h), min(TILE, w)) for h, w in shapes]
        self._set_header((3, *shapes[0]), np.uint8, shapes, tiles)

    def _open_handle(self) -> Any:
        openslide = openslide_module()
        if openslide.OpenSlide.detect_format(self.path) is None:
            raise SourceError(f"{self.path} is not a format OpenSlide reads")
        return openslide.OpenSlide(self.path)

    def _read_tile(self, level: int, ty: int, tx: int) -> np.ndarray:
        (H, W), (th, tw) = self.level_shapes[level], self.tile_shapes[level]
        fy, fx = self.downsamples[level]
        y, x = ty * th, tx * tw
        size = (min(tw, W - x), min(th, H - y))
        # read_region takes the corner in level-0 pixels and the size in level pixels
        rgba = self.handle().read_region((round(x * fx), round(y * fy)), level, size)
        return np.ascontiguousarray(np.asarray(rgba)[..., :3].transpose(2, 0, 1))

    def verify(self) -> None:
        try:
            super().verify()
        except SourceError:
            raise
        except Exception as exc:  # OpenSlideError and what libtiff reports
            raise SourceError(f"{self.path}: {exc}") from exc
