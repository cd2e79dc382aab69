"""Entropy regulariser of the attention distribution (docs/method.md, "Entropy
regulariser").

Sign convention (one, tested): the regulariser is *added* to the loss and is
``strength * sum_i a_i log(a_i + eps)`` averaged over the batch, i.e.
``-strength * mean_b H(a_b)``. A positive strength therefore *raises* the
entropy when the loss is minimised, which discourages the attention from
collapsing early. This equals the original TensorFlow regulariser.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["attention_entropy", "entropy_regularizer"]

EPS = 1e-6


def attention_entropy(attention: Tensor, eps: float = EPS) -> Tensor:
    """Entropy ``H(a_b) = -sum_i a_i log(a_i + eps)`` of each item, shape (B,)."""
    flat = attention.reshape(attention.shape[0], -1)
    return -(flat * torch.log(flat + eps)).sum(dim=1)


def entropy_regularizer(attention: Tensor, strength: float, eps: float = EPS) -> Tensor:
    """Loss term ``-strength * mean_b H(a_b)`` (a scalar) to add to the task loss.

    Args:
        attention: (B, *space) the full attention distribution (before sampling).
        strength: positive values raise the entropy, negative values lower it.
    """
    return -strength * attention_entropy(attention, eps).mean()
