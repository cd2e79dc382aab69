"""Reading image files into ``uint8`` arrays, with errors that name the file.

Pillow is imported on first use: only the real-image tasks need it.
Resizing and augmentations are :mod:`ats.data.transforms`.
"""

from __future__ import annotations

import os
from typing import Callable, TypeVar

import numpy as np

__all__ = ["read_image_size", "read_rgb_image"]

T = TypeVar("T")


def _with_image(path: str | os.PathLike, verb: str, use: Callable[[object], T]) -> T:
    """``use(image)`` on the opened file; a missing file raises ``FileNotFoundError``,
    any other failure ``ValueError("cannot <verb> image <path>: ...")``."""
    from PIL import Image  # deferred: only the real-image tasks need Pillow

    try:
        with Image.open(path) as img:
            return use(img)
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except Exception as e:  # PIL raises several types for unreadable files
        raise ValueError(f"cannot {verb} image {path}: {e}") from e


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(H, W)`` of an image file, read from its header only (no decoding)."""
    w, h = _with_image(path, "read", lambda img: img.size)
    return int(h), int(w)


def read_rgb_image(path: str | os.PathLike, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image file into a ``uint8`` array ``(H, W, 3)`` in RGB order.

    Grayscale, palette and RGBA files are converted to RGB (as ``cv2.imread``
    would give 3 channels). ``expected_size`` ``(H, W)``, when given, is
    checked and a mismatch raises a ``ValueError`` naming the file.
    """
    # np.array makes a writable copy.
    arr = _with_image(path, "decode", lambda img: np.array(img.convert("RGB"), dtype=np.uint8))
    if expected_size is not None and arr.shape[:2] != tuple(expected_size):
        h, w = expected_size
        raise ValueError(f"image {path} is {arr.shape[0]}x{arr.shape[1]} (HxW) pixels, "
                         f"expected {h}x{w}")
    return arr
