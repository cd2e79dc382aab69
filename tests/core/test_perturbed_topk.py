"""The perturbed top-k of DPS (ats/core/perturbed_topk.py; docs/methods.md, "DPS").

The forward is checked against its definition, ``y_σ(s) = E[topk(s + σZ)]``
(a closed form for K = 2, an independent Monte-Carlo loop otherwise); the
backward against finite differences of that smoothed objective, computed
with common random numbers. Tolerances are five standard errors of the
estimates, computed from the samples. The two errors of the original JAX
code (an element-wise product where the outer product belongs, and the
Jacobian contracted on the wrong side) fail the same check by dozens of
standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ats.core.perturbed_topk import (
    hard_topk_indicators,
    perturbed_topk,
    topk_indices,
)

SIGMA = 0.5
SCORES = torch.tensor([[0.3, -0.2, 0.5, 0.1]], dtype=torch.float64)
# upstream gradient: different for each slot, so a Jacobian with its score-space
# axes swapped, or only its diagonal, gives other numbers
G = torch.tensor([[[1.0, -2.0, 0.5, 3.0], [-1.0, 0.7, 2.0, -0.4]]], dtype=torch.float64)
K, KSEL = 4, 2


def test_k_equal_1_on_two_scores_is_the_gaussian_probability():
    s = torch.tensor([[0.2, -0.1]], dtype=torch.float64)
    n = 20_000
    soft = perturbed_topk(s, 1, sigma=SIGMA, n_samples=n,
                          generator=torch.Generator().manual_seed(0))
    # P(s0 + σZ0 > s1 + σZ1) = Φ((s0 - s1) / (σ√2))
    p = 0.5 * (1 + math.erf(0.3 / (SIGMA * math.sqrt(2)) / math.sqrt(2)))
    assert abs(float(soft[0, 0, 0]) - p) < 5 * math.sqrt(p * (1 - p) / n)
    torch.testing.assert_close(soft.sum(-1), torch.ones(1, 1, dtype=torch.float64))


def _naive_indicators(s: np.ndarray, k: int, sigma: float, n: int, seed: int) -> np.ndarray:
    """The definition, one perturbation at a time: (k, K) mean of the one-hot
    rows of the k largest perturbed scores, sorted by index."""
    rng = np.random.default_rng(seed)
    out = np.zeros((k, len(s)))
    for _ in range(n):
        chosen = np.sort(np.argsort(-(s + sigma * rng.standard_normal(len(s))))[:k])
        out[np.arange(k), chosen] += 1
    return out / n


def test_the_forward_is_the_mean_of_perturbed_top_k_indicators():
    s = np.array([0.4, -0.3, 0.1, 0.35, 0.0])
    n = 20_000
    soft = perturbed_topk(torch.tensor(s)[None], 3, sigma=SIGMA, n_samples=n,
                          generator=torch.Generator().manual_seed(1))[0].numpy()
    naive = _naive_indicators(s, 3, SIGMA, n, seed=2)
    se = np.sqrt(naive * (1 - naive) * 2 / n) + 1e-12
    assert np.all(np.abs(soft - naive) < 5 * se + 1e-9), (soft - naive) / se
    np.testing.assert_allclose(soft.sum(-1), 1.0)  # each slot is a distribution


def test_a_tiny_sigma_gives_the_hard_top_k_by_index():
    s = torch.tensor([[0.9, 0.1, 0.5, 0.7, 0.2]])
    soft = perturbed_topk(s, 3, sigma=1e-6, n_samples=10, generator=torch.Generator())
    torch.testing.assert_close(soft, hard_topk_indicators(s, 3))
    assert topk_indices(s, 3).tolist() == [[0, 2, 3]]


# -- the Jacobian ------------------------------------------------------------------


def _finite_differences(n: int, h: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """d/ds_e of L(s) = <G, y_σ(s)> by central differences, the same noise on
    both sides; the mean and standard error over the n perturbations."""
    noise = torch.randn((1, n, K), generator=torch.Generator().manual_seed(seed),
                        dtype=torch.float64)

    def per_sample(s):
        idx = topk_indices(s.unsqueeze(1) + SIGMA * noise, KSEL)
        return G.gather(2, idx.transpose(1, 2)).sum(1)[0]  # (n,)

    means, errors = [], []
    for e in range(K):
        step = torch.zeros(K, dtype=torch.float64)
        step[e] = h
        diff = (per_sample(SCORES + step) - per_sample(SCORES - step)) / (2 * h)
        means.append(diff.mean())
        errors.append(diff.std() / math.sqrt(n))
    return torch.stack(means), torch.stack(errors)


def _jacobian_samples(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The one-hot top-k rows (n, k, K) and the noise (n, K) of n perturbations."""
    noise = torch.randn((1, n, K), generator=torch.Generator().manual_seed(seed),
                        dtype=torch.float64)
    idx = topk_indices(SCORES.unsqueeze(1) + SIGMA * noise, KSEL)
    return torch.nn.functional.one_hot(idx, K)[0].double(), noise[0]


@pytest.fixture(scope="module")
def reference():
    """Finite differences and the standard error of the Jacobian estimate."""
    fd, fd_se = _finite_differences(400_000, 0.05 * SIGMA, seed=11)
    onehot, noise = _jacobian_samples(200_000, seed=12)
    # per-sample contributions to Σ_{j,i} G[j,i] y[j,i] Z_e / σ
    contrib = torch.einsum("jd,njd,ne->ne", G[0], onehot, noise) / SIGMA
    grad_se = contrib.std(0) / math.sqrt(len(noise))
    return fd, (fd_se ** 2 + grad_se ** 2).sqrt(), onehot, noise


def test_the_backward_matches_finite_differences_of_the_smoothed_objective(reference):
    fd, tolerance, _, _ = reference
    scores = SCORES.clone().requires_grad_(True)
    soft = perturbed_topk(scores, KSEL, sigma=SIGMA, n_samples=200_000,
                          generator=torch.Generator().manual_seed(12))
    (soft * G).sum().backward()
    z = (scores.grad[0] - fd) / tolerance
    assert torch.all(z.abs() < 5), z


def test_both_documented_errors_fail_that_check(reference):
    fd, tolerance, onehot, noise = reference
    n = len(noise)
    # the Jacobian J[j, i, e] = E[y[j, i] Z_e] / σ, an outer product per sample
    jacobian = torch.einsum("njd,ne->jde", onehot, noise) / (n * SIGMA)
    right = torch.einsum("jd,jde->e", G[0], jacobian)
    # error 1: E[y[j, i] Z_i], an element-wise product (the diagonal of J only)
    diagonal = torch.einsum("njd,nd->jd", onehot, noise) / (n * SIGMA)
    elementwise = torch.einsum("jd,jd->d", G[0], diagonal)
    # error 2: J contracted on its other score-space axis (J transposed)
    transposed = torch.einsum("jd,jed->e", G[0], jacobian)
    assert torch.all(((right - fd) / tolerance).abs() < 5)
    for wrong in (elementwise, transposed):
        assert ((wrong - fd) / tolerance).abs().max() > 20


@pytest.mark.parametrize("bad, message", [
    ({"k": 0}, r"k must be an int in \[1, K=4\]"),
    ({"k": 5}, r"k must be an int in \[1, K=4\]"),
    ({"sigma": 0.0}, "sigma must be > 0"),
    ({"n_samples": 0}, "n_samples must be a positive int"),
])
def test_bad_arguments_are_named(bad, message):
    kwargs = {"k": 2, "sigma": 0.1, "n_samples": 5, **bad}
    k = kwargs.pop("k")
    with pytest.raises(ValueError, match=message):
        perturbed_topk(SCORES, k, **kwargs)
    with pytest.raises(ValueError, match=r"scores must be a floating-point \(B, K\) tensor"):
        perturbed_topk(SCORES[0], 2, sigma=0.1, n_samples=5)
