"""Samplers: draw N positions from an attention map, paired with their estimator.

Each sampling scheme has its own unbiased estimator, so a sampler is the pair
``sample(attention, n) -> Samples`` and ``expectation(features, probs) -> F``.
Randomness goes through an explicit :class:`torch.Generator`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import NamedTuple

import torch
from torch import Tensor

from ats.core.expectation import (
    WithoutReplacementGrad,
    expected_with_replacement,
    expected_without_replacement,
)

__all__ = ["Samples", "Sampler", "WithReplacement", "WithoutReplacement", "check_attention"]


class Samples(NamedTuple):
    """Positions drawn from an attention map.

    Attributes:
        indices: (B, N, d) int64 grid positions, row-major multi-indices into
            the attention map's d spatial dimensions, in draw order.
        probs: (B, N) the attention probabilities at those positions,
            gathered from the map (so gradients flow back into it).
    """

    indices: Tensor
    probs: Tensor


def check_attention(attention: Tensor) -> None:
    """Validate an attention map (B, *space) with 1 to 3 spatial dims."""
    if not isinstance(attention, Tensor):
        raise TypeError(f"attention must be a torch.Tensor, got {type(attention).__name__}")
    if attention.ndim not in (2, 3, 4):
        raise ValueError(
            "attention must have shape (B, *space) with 1 to 3 spatial dimensions, "
            f"got shape {tuple(attention.shape)}"
        )
    if not attention.is_floating_point():
        raise ValueError(f"attention must be floating point, got {attention.dtype}")
    if not bool(torch.isfinite(attention).all()):
        raise ValueError("attention contains NaN or infinite values")


class Sampler(ABC):
    """Base class: a sampling scheme and its estimator."""

    #: whether a position can be drawn more than once
    replace: bool

    def sample(
        self, attention: Tensor, n: int, *, generator: torch.Generator | None = None
    ) -> Samples:
        """Draw ``n`` positions per batch item from ``attention``.

        Args:
            attention: (B, *space) probabilities summing to 1 per item, with
                1 to 3 spatial dimensions.
            n: number of positions per item.
            generator: source of randomness (on the attention's device).

        Returns:
            :class:`Samples` with indices (B, n, d) and probs (B, n).
        """
        check_attention(attention)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n (the number of patches) must be a positive int, got {n!r}")
        space = tuple(attention.shape[1:])
        flat = attention.reshape(attention.shape[0], -1)
        flat_idx = self._draw(flat, n, generator)
        indices = torch.stack(torch.unravel_index(flat_idx, space), dim=-1)
        probs = torch.gather(flat, 1, flat_idx)
        return Samples(indices, probs)

    def top(self, attention: Tensor, n: int) -> Samples:
        """The ``n`` most probable positions, in decreasing order of probability.

        For deterministic inference, an ablation: the paper samples at test
        time too (docs/method.md, "Training and evaluation"). Estimates built
        from these positions are not unbiased.
        """
        check_attention(attention)
        space = tuple(attention.shape[1:])
        flat = attention.reshape(attention.shape[0], -1)
        _check_n_without_replacement(n, flat.shape[1])
        flat_idx = torch.topk(flat, n, dim=1, sorted=True).indices
        indices = torch.stack(torch.unravel_index(flat_idx, space), dim=-1)
        return Samples(indices, torch.gather(flat, 1, flat_idx))

    @abstractmethod
    def _draw(self, flat: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
        """(B, K) probabilities -> (B, n) flat indices."""

    @abstractmethod
    def expectation(
        self, features: Tensor, probs: Tensor, weights: Tensor | None = None
    ) -> Tensor:
        """(B, N, D) features and (B, N) probs -> (B, D) unbiased estimate."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _check_n_without_replacement(n: int, k: int) -> None:
    if n > k:
        raise ValueError(
            f"cannot draw n={n} distinct positions from an attention map with only "
            f"{k} positions; use n <= {k} or sampling with replacement"
        )


class WithReplacement(Sampler):
    """N i.i.d. draws from the attention distribution (docs/method.md, "Sampling")."""

    replace = True

    def _draw(self, flat: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
        return torch.multinomial(flat.detach(), n, replacement=True, generator=generator)

    def expectation(
        self, features: Tensor, probs: Tensor, weights: Tensor | None = None
    ) -> Tensor:
        return expected_with_replacement(features, probs, weights)


class WithoutReplacement(Sampler):
    """N distinct positions by Gumbel top-k, kept in draw order (docs/method.md,
    "Sampling").

    Sorting ``log a + Gumbel`` in decreasing order gives exactly the order of
    sequential draws without replacement (the Plackett-Luce law), which the
    sequential estimator needs.

    Args:
        grad: attention gradient of the estimator, ``"unbiased"`` (default) or
            ``"original"`` (the biased TensorFlow formula, for reproduction).
    """

    replace = False

    def __init__(self, grad: WithoutReplacementGrad = "unbiased") -> None:
        if grad not in ("unbiased", "original"):
            raise ValueError(f"grad must be 'unbiased' or 'original', got {grad!r}")
        self.grad = grad

    def _draw(self, flat: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
        _check_n_without_replacement(n, flat.shape[1])
        flat = flat.detach()
        u = torch.rand(flat.shape, generator=generator, device=flat.device, dtype=flat.dtype)
        # Gumbel(0, 1) noise is -log(-log U). The sign matters: +log(-log U)
        # (a fork's bug, docs/method.md "Sampling") no longer samples from ``a``.
        gumbel = -torch.log(-torch.log(u))
        return torch.topk(torch.log(flat) + gumbel, n, dim=1, sorted=True).indices

    def expectation(
        self, features: Tensor, probs: Tensor, weights: Tensor | None = None
    ) -> Tensor:
        return expected_without_replacement(features, probs, weights, grad=self.grad)

    def __repr__(self) -> str:
        return f"WithoutReplacement(grad={self.grad!r})"

