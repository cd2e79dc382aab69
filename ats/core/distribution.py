"""The attention distribution: a softmax over every position of the map."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["attention_softmax"]


def attention_softmax(scores: Tensor, smoothing: float = 0.0) -> Tensor:
    """Softmax over all spatial positions of each item, with smoothing.

    ``a = (1 - s) * softmax(scores) + s / K`` (docs/method.md, "Attention
    distribution"): the floor of ``s / K`` under every probability keeps
    ``log a`` finite for sampling and bounds the ``1 / a`` terms of the
    attention gradient.

    Args:
        scores: (B, *space) or (B, 1, *space) unnormalised scores; a channel
            axis of size 1 is dropped.
        smoothing: ``s`` in [0, 1).

    Returns:
        (B, *space) probabilities summing to 1 per item.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
    if scores.ndim < 2:
        raise ValueError(f"scores must have shape (B, *space), got {tuple(scores.shape)}")
    if scores.ndim >= 3 and scores.shape[1] == 1:
        scores = scores.squeeze(1)
    flat = torch.softmax(scores.reshape(scores.shape[0], -1), dim=1)
    if smoothing > 0:
        flat = (1.0 - smoothing) * flat + smoothing / flat.shape[1]
    return flat.reshape(scores.shape)
