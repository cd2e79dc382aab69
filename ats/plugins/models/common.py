"""What the selection models share: reading patches through the extraction
backends onto the networks' device, and the input checks."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ats.core.extract import Extractor

__all__ = ["check_tensor_inputs", "read_patches"]


def check_tensor_inputs(model: str, x_low: Tensor, x_high: object) -> None:
    """x_low a (B, C, *low) tensor and x_high a (B, C, *high) tensor or array."""
    if not isinstance(x_high, (Tensor, np.ndarray)):
        raise ValueError(f"the {model} model reads x_high as a (B, C, *high) tensor or numpy "
                         f"array, got {type(x_high).__name__} (image sources are read by the "
                         "ats model only)")
    if not isinstance(x_low, Tensor) or x_low.ndim != len(x_high.shape) or \
            x_low.shape[0] != x_high.shape[0]:
        raise ValueError(f"x_low {tuple(getattr(x_low, 'shape', ()))} and x_high "
                         f"{tuple(x_high.shape)} must be (B, C, *space) with the same B and dims")


def read_patches(extractor: Extractor, x_high: Tensor | np.ndarray, offsets: Tensor,
                 patch: Sequence[int], like: Tensor) -> Tensor:
    """(B, N, C, *patch) patches at ``offsets`` (B, N, d), as ``like``'s dtype on
    its device; integer images scaled to [0, 1] by the extractor."""
    integer = not (x_high.is_floating_point() if isinstance(x_high, Tensor)
                   else np.issubdtype(x_high.dtype, np.floating))
    where = x_high.device if isinstance(x_high, Tensor) else torch.device("cpu")
    patches = extractor(x_high, offsets.to(where), tuple(patch), as_float=integer)
    return patches.to(device=like.device, dtype=like.dtype)
