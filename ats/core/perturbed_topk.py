"""The perturbed top-k of differentiable patch selection (docs/methods.md, "DPS").

Berthet et al., "Learning with Differentiable Perturbed Optimizers" (NeurIPS
2020), as used for patch selection by Cordonnier et al., "Differentiable
Patch Selection for Image Recognition" (CVPR 2021).

For scores ``s`` (K,), the hard top-k indicator ``y*(s)`` is a (k, K) 0/1
matrix whose row j is the one-hot of the j-th selected position, the
positions sorted by index (so that slot j is the same kind of thing for
every perturbation). With Gaussian noise Z ~ N(0, I_K):

* forward: ``y_σ(s) = E_Z[y*(s + σZ)]``, estimated by the mean over
  ``n_samples`` draws;
* backward: ``∂y_σ[j, i] / ∂s_e = E_Z[y*(s + σZ)[j, i] · Z_e] / σ`` (the
  perturbed optimizer's Jacobian for Gaussian noise, Berthet et al. Prop. 3.1),
  estimated with the same draws. A (k, K, K) tensor per item: the outer
  product of the indicator with the noise, contracted with the upstream
  gradient over its (j, i) axes, never over (j, e).

The original JAX code (and the PyTorch copies of it) computed
``E[y[j, i] · Z_i]`` (an element-wise product where the outer product belongs)
and contracted the Jacobian on the wrong side; ``tests/core/test_perturbed_topk.py``
checks the Jacobian against finite differences of ``y_σ`` and shows that both
errors fail that check.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["hard_topk_indicators", "perturbed_topk", "topk_indices"]


def topk_indices(scores: Tensor, k: int) -> Tensor:
    """(B, K) scores -> (B, k) int64 indices of the k largest, sorted by index."""
    return torch.topk(scores, k, dim=-1, sorted=False).indices.sort(dim=-1).values


def hard_topk_indicators(scores: Tensor, k: int) -> Tensor:
    """(B, K) -> (B, k, K): row j the one-hot of the j-th selected index (σ = 0)."""
    idx = topk_indices(scores, k)
    out = scores.new_zeros((*idx.shape, scores.shape[-1]))
    return out.scatter_(2, idx.unsqueeze(-1), 1.0)


class _PerturbedTopK(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores: Tensor, k: int, sigma: float, n_samples: int,
                generator: torch.Generator | None) -> Tensor:
        b, n = scores.shape
        noise = torch.randn((b, n_samples, n), generator=generator, device=scores.device,
                            dtype=scores.dtype)
        # (B, S, k): the selected indices of every perturbed copy, sorted by index
        idx = topk_indices(scores.detach().unsqueeze(1) + sigma * noise, k)
        counts = scores.new_zeros((b, k, n))
        counts.scatter_add_(2, idx.transpose(1, 2),
                            torch.ones_like(idx, dtype=scores.dtype).transpose(1, 2))
        ctx.save_for_backward(idx, noise)
        ctx.sigma, ctx.n = sigma, n
        return counts / n_samples

    @staticmethod
    def backward(ctx, grad: Tensor):
        idx, noise = ctx.saved_tensors
        grad_scores = jacobian_vjp(grad, idx, noise, ctx.sigma)
        return grad_scores, None, None, None, None


def jacobian_vjp(grad: Tensor, idx: Tensor, noise: Tensor, sigma: float) -> Tensor:
    """``grad`` (B, k, K) times the Jacobian estimate, without forming it.

    ``Σ_{j,i} grad[j, i] · mean_s(y_s[j, i] · Z_s[e]) / σ``; since ``y_s[j, ·]`` is
    the one-hot of ``idx[s, j]`` the (j, i) sum picks ``grad[j, idx[s, j]]``:
    ``mean_s(Z_s[e] · Σ_j grad[j, idx[s, j]]) / σ``. Memory (B, S, k), not
    (B, k, K, K).

    Args:
        grad: (B, k, K) upstream gradient of the indicators.
        idx: (B, S, k) the selected indices of the S perturbed copies.
        noise: (B, S, K) their standard normal noise.
    """
    picked = grad.gather(2, idx.transpose(1, 2)).sum(1)  # (B, S): Σ_j grad[j, idx[s, j]]
    return torch.einsum("bs,bse->be", picked, noise) / (noise.shape[1] * sigma)


def perturbed_topk(scores: Tensor, k: int, *, sigma: float, n_samples: int,
                   generator: torch.Generator | None = None) -> Tensor:
    """The perturbed top-k indicators ``y_σ(scores)`` with their Jacobian estimate.

    Args:
        scores: (B, K) floating-point scores.
        k: how many positions to select, 1 <= k <= K.
        sigma: the noise scale σ > 0.
        n_samples: Gaussian perturbations to average over.
        generator: the noise's randomness (on the scores' device).

    Returns:
        (B, k, K): entry [b, j, i] the probability that the j-th selected
        position (by index) of the perturbed scores is i; each row sums to 1.

    Raises:
        ValueError: bad shapes or arguments, naming them.
    """
    if not isinstance(scores, Tensor) or scores.ndim != 2 or not scores.is_floating_point():
        raise ValueError(f"scores must be a floating-point (B, K) tensor, got "
                         f"{getattr(scores, 'shape', type(scores).__name__)}")
    if not isinstance(k, int) or not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k must be an int in [1, K={scores.shape[1]}], got {k!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    return _PerturbedTopK.apply(scores, k, float(sigma), n_samples, generator)
