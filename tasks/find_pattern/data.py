"""Data of the find-the-pattern task (see the package docstring)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["PATTERNS", "FindPatternDataset"]


def _patterns() -> np.ndarray:
    """Four 8x8 binary textures, each half on, so the low view cannot tell
    them apart: horizontal stripes, vertical stripes, a 1-pixel and a
    2-pixel checkerboard."""
    yy, xx = np.mgrid[0:8, 0:8]
    return np.stack([
        yy % 2 == 0,
        xx % 2 == 0,
        (yy + xx) % 2 == 0,
        (yy // 2 + xx // 2) % 2 == 0,
    ]).astype(np.uint8)


PATTERNS = _patterns()  # (4, 8, 8) in {0, 1}


class FindPatternDataset(Dataset):
    """``n`` images of ``size`` x ``size`` pixels with one hidden texture.

    Item ``i`` is a pure function of ``(seed, train, i)``. The background is
    uniform noise in [0, ``noise``]; the texture (value 1) sits on an
    ``cell``-aligned position; ``x_low`` is the mean over ``cell`` x ``cell``
    blocks.

    Items: ``x_low`` float32 (1, size/cell, size/cell), ``x_high`` uint8
    (1, size, size), ``y`` int64 in 0..3, ``index`` i, ``boxes`` int64 (1, 4)
    the texture's (top, left, bottom, right) in x_high pixels.
    """

    def __init__(self, n: int, *, size: int = 128, cell: int = 8, noise: float = 0.3,
                 seed: int = 0, train: bool = True) -> None:
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        if cell < PATTERNS.shape[1] or size % cell != 0 or size < cell:
            raise ValueError(
                f"size ({size}) must be a positive multiple of cell ({cell}), and cell must be "
                f">= the pattern size {PATTERNS.shape[1]}"
            )
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1], got {noise}")
        self.n, self.size, self.cell, self.noise = n, size, cell, noise
        self.seed, self.train = seed, train

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} items")
        rng = np.random.default_rng((self.seed, int(self.train), i))
        high = rng.random((self.size, self.size)) * self.noise
        y = int(rng.integers(len(PATTERNS)))
        cells = self.size // self.cell
        r, c = (rng.integers(cells, size=2) * self.cell).tolist()
        p = PATTERNS.shape[1]
        block = high[r:r + p, c:c + p]
        high[r:r + p, c:c + p] = np.maximum(block, PATTERNS[y])
        high_u8 = np.round(high * 255).astype(np.uint8)
        low = high_u8.reshape(cells, self.cell, cells, self.cell).mean(axis=(1, 3)) / 255.0
        return {
            "x_low": torch.from_numpy(low.astype(np.float32))[None],
            "x_high": torch.from_numpy(high_u8)[None],
            "y": torch.tensor(y, dtype=torch.int64),
            "index": i,
            # where the texture is, for the hit rate of the patches read (ats.train.hits)
            "boxes": torch.tensor([[r, c, r + p, c + p]], dtype=torch.int64),
        }
