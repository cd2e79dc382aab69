"""Unbiased estimators of the attention-weighted feature, with custom backward.

Notation (docs/method.md): ``a`` is the attention distribution over K
positions, ``f_i`` the feature of position ``i``, and the target is
``Phi = sum_i a_i f_i``. A sampler draws N positions; the estimators below
take the sampled features ``f_k`` (B, N, D) and the sampled probabilities
``a_k`` (B, N) and return ``F`` (B, D) with ``E[F] = Phi``.

Why a custom backward: ``F`` does not depend on ``a_k`` in the
with-replacement forward (``F = sum_k w_k f_k``), so plain autodiff gives the
attention network no gradient from the task loss. The backward passes below
give the unbiased score-function gradient instead. The attention gradient is
returned for the *sampled* probabilities; autograd's ``gather`` backward then
scatter-adds it into the full map (repeated positions accumulate).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = [
    "expected_with_replacement",
    "expected_without_replacement",
    "exclusive_cumsum",
    "WithoutReplacementGrad",
]

WithoutReplacementGrad = Literal["unbiased", "original"]


def exclusive_cumsum(x: Tensor, dim: int) -> Tensor:
    """``cumsum`` that excludes the current element: ``out[k] = sum_{j<k} x[j]``.

    The PyTorch port used the inclusive ``cumsum`` here, which leaves the
    forward intact but biases both gradients (docs/method.md, "Estimator without
    replacement").
    """
    return torch.cumsum(x, dim) - x


def _over_probs(x: Tensor, probs: Tensor) -> Tensor:
    """``x / probs``, and 0 where ``probs == 0``.

    A draw of probability zero (a softmax that underflowed, with no smoothing,
    and more distinct draws than non-zero cells) has no score-function term:
    the attention network cannot move mass through it, and its ``0 / 0``
    would make every score gradient NaN.
    """
    zero = probs == 0
    return torch.where(zero, 0.0, x / torch.where(zero, 1.0, probs))


def _uniform_weights(probs: Tensor) -> Tensor:
    n = probs.shape[-1]
    return probs.new_full(probs.shape, 1.0 / n)


class _ExpectedWithReplacement(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features: Tensor, probs: Tensor, weights: Tensor) -> Tensor:
        ctx.save_for_backward(features, probs, weights)
        return torch.einsum("bn,bnd->bd", weights, features)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        features, probs, weights = ctx.saved_tensors
        grad_features = weights[..., None] * grad[:, None, :]
        # d/da_k = w_k <G, f_k> / a_k: the score-function term (docs/method.md,
        # "Estimator with replacement").
        grad_probs = _over_probs(weights * torch.einsum("bd,bnd->bn", grad, features), probs)
        return grad_features, grad_probs, None


class _ExpectedWithoutReplacement(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, features: Tensor, probs: Tensor, weights: Tensor, mode: str
    ) -> Tensor:
        # pm_k = 1 - sum_{j<k} a_j: the mass left when the k-th draw is made.
        pm = 1.0 - exclusive_cumsum(probs, dim=1)
        weighted = probs[..., None] * features
        # E_k = sum_{j<k} a_j f_j + pm_k f_k is unbiased given the history.
        per_draw = exclusive_cumsum(weighted, dim=1) + pm[..., None] * features
        ctx.mode = mode
        ctx.save_for_backward(features, probs, weights, pm, per_draw)
        return torch.einsum("bn,bnd->bd", weights, per_draw)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        features, probs, weights, pm = ctx.saved_tensors[:4]
        per_draw = ctx.saved_tensors[4]
        # sum_{m>k} w_m: the later draws whose E_m contain a_k f_k.
        later_weights = torch.flip(exclusive_cumsum(torch.flip(weights, [1]), 1), [1])
        # The exact derivative of the forward w.r.t. f_k, for any weights.
        feature_coef = weights * pm + probs * later_weights  # (B, N)
        grad_features = feature_coef[..., None] * grad[:, None, :]
        g_dot_f = torch.einsum("bd,bnd->bn", grad, features)
        if ctx.mode == "unbiased":
            # <G, f_k> dF/df_k / a_k: unbiased because E[scatter dF/df] = a
            # (docs/method.md, "Estimator without replacement").
            grad_probs = _over_probs(g_dot_f * feature_coef, probs)
        else:
            # The original TensorFlow formula, kept for reproduction; biased.
            n = probs.shape[1]
            k = torch.arange(n, device=probs.device, dtype=probs.dtype)
            term = (
                per_draw * _over_probs(pm, probs)[..., None]
                + exclusive_cumsum(features, dim=1)
                - k[None, :, None] * features
            )
            grad_probs = weights * torch.einsum("bd,bnd->bn", grad, term)
            grad_probs = torch.where(probs > 0, grad_probs, 0.0)
        return grad_features, grad_probs, None, None


def _check(features: Tensor, probs: Tensor, weights: Tensor | None) -> Tensor:
    if features.ndim != 3:
        raise ValueError(
            f"features must have shape (B, N, D), got {tuple(features.shape)}"
        )
    if probs.shape != features.shape[:2]:
        raise ValueError(
            f"probs must have shape (B, N) = {tuple(features.shape[:2])} to match "
            f"features, got {tuple(probs.shape)}"
        )
    if weights is None:
        return _uniform_weights(probs).to(features.dtype)
    if weights.shape != probs.shape:
        raise ValueError(
            f"weights must have shape (B, N) = {tuple(probs.shape)}, got {tuple(weights.shape)}"
        )
    return weights.detach().to(features.dtype)


def expected_with_replacement(
    features: Tensor, probs: Tensor, weights: Tensor | None = None
) -> Tensor:
    """Monte-Carlo estimate ``F = sum_k w_k f_k`` for i.i.d. draws from ``a``.

    Args:
        features: (B, N, D) features of the sampled patches.
        probs: (B, N) attention probabilities at the sampled positions (the
            gradient flows back through them into the attention map).
        weights: (B, N) sample weights, uniform ``1/N`` by default; they get
            no gradient and should sum to 1 for an unbiased estimate.

    Returns:
        (B, D) estimate of ``sum_i a_i f_i``.
    """
    weights = _check(features, probs, weights)
    return _ExpectedWithReplacement.apply(features, probs.to(features.dtype), weights)


def expected_without_replacement(
    features: Tensor,
    probs: Tensor,
    weights: Tensor | None = None,
    *,
    grad: WithoutReplacementGrad = "unbiased",
) -> Tensor:
    """Sequential estimator for draws without replacement, in draw order.

    ``F = sum_k w_k (sum_{j<k} a_j f_j + (1 - sum_{j<k} a_j) f_k)``
    (docs/method.md, "Estimator without replacement"). The draws must be in the
    order they were made (Gumbel top-k order); re-sorting them biases the
    estimate.

    Args:
        features: (B, N, D) features of the sampled patches, in draw order.
        probs: (B, N) attention probabilities at the sampled positions.
        weights: (B, N) weights of the per-draw estimates, uniform by default.
        grad: attention gradient. ``"unbiased"`` (default) is
            ``<G, f_k> (dF/df_k) / a_k``; ``"original"`` is the formula of the
            TensorFlow implementation, which is biased and kept only to
            reproduce earlier results.

    Returns:
        (B, D) estimate of ``sum_i a_i f_i``.
    """
    if grad not in ("unbiased", "original"):
        raise ValueError(f"grad must be 'unbiased' or 'original', got {grad!r}")
    weights = _check(features, probs, weights)
    return _ExpectedWithoutReplacement.apply(
        features, probs.to(features.dtype), weights, grad
    )
