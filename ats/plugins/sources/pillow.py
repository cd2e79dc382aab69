"""The ``pillow`` source: ordinary image files (PNG, JPEG, BMP, ...) read whole.

They are small, so the whole image is decoded on the first read (and kept
for the next reads in this process) and read in place like an array.
Pillow's modes map to channels and dtypes: ``L`` and ``1`` to one uint8
channel, ``LA`` to two, ``RGB`` (and ``P``, ``CMYK``, ``YCbCr`` converted to
it) to three, ``RGBA`` (and ``P`` with transparency) to four, 16-bit grey
(``I;16``) to uint16 and ``F`` to float32.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ats.registry import source
from ats.sources.base import Source, SourceError

__all__ = ["PillowSource"]

# mode -> (mode to convert to, channels, dtype)
_MODES = {
    "1": ("L", 1, np.uint8), "L": ("L", 1, np.uint8), "LA": ("LA", 2, np.uint8),
    "RGB": ("RGB", 3, np.uint8), "RGBA": ("RGBA", 4, np.uint8), "CMYK": ("RGB", 3, np.uint8),
    "YCbCr": ("RGB", 3, np.uint8), "I;16": ("I;16", 1, np.uint16),
    "I;16L": ("I;16", 1, np.uint16), "I;16B": ("I;16", 1, np.uint16), "F": ("F", 1, np.float32),
}


@source.register("pillow")
class PillowSource(Source):
    """An ordinary image file (PNG, JPEG, BMP, GIF, WebP), decoded whole on first read."""

    name = "pillow"
    formats = "ordinary images read whole with Pillow (.png, .jpg, .jpeg, .bmp, .gif, .webp)"
    suffixes = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
    priority = 60

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        if not Path(self.path).is_file():
            raise FileNotFoundError(f"image file not found: {self.path}")
        from PIL import Image

        try:
            with Image.open(self.path) as img:
                mode, (w, h) = img.mode, img.size
                if mode == "P":
                    mode = "RGBA" if "transparency" in img.info else "RGB"
        except Exception as exc:  # Pillow raises several types for unreadable files
            raise SourceError(f"cannot read image {self.path}: {exc}") from exc
        if mode not in _MODES:
            raise SourceError(f"{self.path} has the Pillow mode {mode!r}, which is not an image "
                              f"source; modes read: {', '.join(_MODES)}")
        self._mode, channels, dtype = _MODES[mode]
        self._set_header((channels, h, w), dtype, [(h, w)], [(h, w)])

    def _decode(self) -> np.ndarray:
        """The whole image, (C, H, W), decoded once per process."""
        cached = self.__dict__.get("_cached_image")
        if cached is None:
            from PIL import Image

            try:
                with Image.open(self.path) as img:
                    same = img.mode == self._mode or img.mode.startswith("I;16")
                    arr = np.asarray(img if same else img.convert(self._mode))
            except Exception as exc:
                raise SourceError(f"cannot decode image {self.path}: {exc}") from exc
            arr = arr.astype(self.dtype, copy=False)
            arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
            cached = np.ascontiguousarray(arr)
            if cached.shape != self.shape:
                raise SourceError(f"{self.path} decoded as {cached.shape}, expected {self.shape}")
            self._cached_image = cached
        return cached

    def array(self, level: int = 0) -> np.ndarray:
        return self._decode()

    def _read_tile(self, level: int, ty: int, tx: int) -> np.ndarray:
        return self._decode()

    def verify(self) -> None:
        """Decode the whole file (a truncated file fails here)."""
        self._decode()
