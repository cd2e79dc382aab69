"""Estimators checked by exact enumeration over every ordered sample.

For small problems (K <= 6, N <= 4) we list every possible draw sequence with
its exact probability, run the estimator on all of them at once (one batch
item per sequence, float64) and take exact expectations. Unbiasedness then
holds to rounding error, not to a Monte-Carlo tolerance.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ats.core.expectation import (
    exclusive_cumsum,
    expected_with_replacement,
    expected_without_replacement,
)


def _problem(k: int, d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    a = torch.softmax(torch.randn(k, generator=g, dtype=torch.float64) * 1.5, 0)
    f = torch.randn(k, d, generator=g, dtype=torch.float64)
    grad = torch.randn(d, generator=g, dtype=torch.float64)
    return a, f, grad


def _sequences(k: int, n: int, replace: bool, a: torch.Tensor):
    """All ordered index sequences and their exact probabilities."""
    if replace:
        seqs = list(itertools.product(range(k), repeat=n))
        prob = [float(np.prod([a[i] for i in s])) for s in seqs]
    else:
        seqs = list(itertools.permutations(range(k), n))
        prob = []
        for s in seqs:
            p, left = 1.0, 1.0
            for i in s:  # sequential (Plackett-Luce) law
                p *= float(a[i]) / left
                left -= float(a[i])
            prob.append(p)
    return torch.tensor(seqs), torch.tensor(prob, dtype=torch.float64)


def _run(estimator, a, f, grad, seqs, weights=None):
    """Forward/backward on every sequence; returns F, d/df and d/da per draw."""
    feats = f[seqs].clone().requires_grad_(True)  # (S, N, D)
    probs = a[seqs].clone().requires_grad_(True)  # (S, N)
    out = estimator(feats, probs, weights)
    out.backward(grad.expand_as(out))
    return out.detach(), feats.grad, probs.grad


def _scatter(values, seqs, prob, k):
    """E[sum_k values_k 1{i_k = i}] for every position i: (K, ...) tensor."""
    out = torch.zeros((k,) + values.shape[2:], dtype=values.dtype)
    weighted = values * prob.view(-1, *([1] * (values.ndim - 1)))
    out.index_add_(0, seqs.reshape(-1), weighted.reshape(-1, *values.shape[2:]))
    return out


ESTIMATORS = {
    "with_replacement": (True, expected_with_replacement),
    "without_replacement": (False, expected_without_replacement),
}


@pytest.mark.parametrize("name", list(ESTIMATORS))
@pytest.mark.parametrize("k,n", [(3, 1), (4, 2), (5, 3), (6, 4), (5, 2)])
@pytest.mark.parametrize("custom_weights", [False, True])
def test_unbiased_forward_and_gradients(name, k, n, custom_weights):
    replace, estimator = ESTIMATORS[name]
    a, f, grad = _problem(k, d=3, seed=10 * k + n)
    seqs, prob = _sequences(k, n, replace, a)
    assert prob.sum().item() == pytest.approx(1.0, abs=1e-12)
    weights = None
    if custom_weights:
        w = torch.linspace(1.0, 2.0, n, dtype=torch.float64)
        weights = (w / w.sum()).expand(len(seqs), n)
    out, g_feat, g_prob = _run(estimator, a, f, grad, seqs, weights)

    phi = (a[:, None] * f).sum(0)
    torch.testing.assert_close((prob[:, None] * out).sum(0), phi, atol=1e-10, rtol=0)
    # E[scatter dF/df] = a (times the upstream gradient G)
    torch.testing.assert_close(
        _scatter(g_feat, seqs, prob, k), a[:, None] * grad, atol=1e-10, rtol=0
    )
    # E[scatter dF/da] = <G, f_i>: the gradient of sum_i a_i <G, f_i>
    torch.testing.assert_close(_scatter(g_prob, seqs, prob, k), f @ grad, atol=1e-10, rtol=0)


def test_without_replacement_feature_gradient_is_the_derivative_of_the_forward():
    """gf must equal autodiff of the forward, also for non-uniform weights."""
    a, f, _ = _problem(5, d=2, seed=3)
    seqs = torch.tensor([[4, 0, 2]])
    w = torch.tensor([[0.5, 0.3, 0.2]])
    feats = f[seqs].clone().requires_grad_(True)
    probs = a[seqs]
    expected_without_replacement(feats, probs, w).sum().backward()

    plain = f[seqs].clone().requires_grad_(True)
    pm = 1 - exclusive_cumsum(probs, 1)
    per_draw = exclusive_cumsum(probs[..., None] * plain, 1) + pm[..., None] * plain
    (w[..., None] * per_draw).sum().backward()
    torch.testing.assert_close(feats.grad, plain.grad, atol=1e-12, rtol=0)


def _original_tf_grad(a_s, f_s, w, grad):
    """numpy transcription of the TensorFlow code's attention gradient (1.5)."""
    n = len(a_s)
    pm = 1 - np.concatenate([[0.0], np.cumsum(a_s)[:-1]])
    fa_cum = np.concatenate([np.zeros((1, f_s.shape[1])), np.cumsum(a_s[:, None] * f_s, 0)[:-1]])
    f_est = fa_cum + pm[:, None] * f_s
    ga1 = f_est / (a_s / pm)[:, None]
    f_cum = np.concatenate([np.zeros((1, f_s.shape[1])), np.cumsum(f_s, 0)[:-1]])
    ga2 = f_cum - np.arange(n)[:, None] * f_s
    return w * ((ga1 + ga2) * grad).sum(1)


def test_original_mode_equals_the_tensorflow_formula_and_is_biased():
    k, n = 5, 3
    a, f, grad = _problem(k, d=4, seed=7)
    seqs, prob = _sequences(k, n, False, a)

    def original(feats, probs, weights):
        return expected_without_replacement(feats, probs, weights, grad="original")

    out, g_feat, g_prob = _run(original, a, f, grad, seqs)
    for s, g in zip(seqs[:20], g_prob[:20]):
        ref = _original_tf_grad(a[s].numpy(), f[s].numpy(), np.full(n, 1 / n), grad.numpy())
        np.testing.assert_allclose(g.numpy(), ref, rtol=1e-12, atol=1e-12)
    # Same forward and feature gradient as the unbiased mode...
    _, g_feat_u, _ = _run(expected_without_replacement, a, f, grad, seqs)
    torch.testing.assert_close(g_feat, g_feat_u)
    # ...but its attention gradient is biased, and not by a constant (which the
    # softmax would forgive): docs/method.md, "Estimator without replacement".
    bias = _scatter(g_prob, seqs, prob, k) - f @ grad
    assert (bias.max() - bias.min()).item() > 0.05


def test_inclusive_cumsum_port_bug_is_not_present():
    """The port's inclusive cumsum shrank E[gf] to a_i (1 - pi_i / N)."""
    a, f, grad = _problem(4, d=2, seed=1)
    seqs, prob = _sequences(4, 4, False, a)  # N = K: every position drawn once
    _, g_feat, _ = _run(expected_without_replacement, a, f, grad, seqs)
    torch.testing.assert_close(_scatter(g_feat, seqs, prob, 4), a[:, None] * grad)


def test_single_draw_without_replacement_is_the_feature():
    a, f, _ = _problem(4, d=3, seed=2)
    seqs = torch.tensor([[2], [0]])
    out = expected_without_replacement(f[seqs], a[seqs])
    torch.testing.assert_close(out, f[seqs][:, 0])


def test_estimators_reject_bad_shapes_and_modes():
    f = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"features must have shape \(B, N, D\)"):
        expected_with_replacement(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"probs must have shape \(B, N\)"):
        expected_with_replacement(f, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="weights must have shape"):
        expected_without_replacement(f, torch.ones(2, 3), torch.ones(3))
    with pytest.raises(ValueError, match="grad must be 'unbiased' or 'original'"):
        expected_without_replacement(f, torch.ones(2, 3), grad="exact")


# -- zero-probability draws (smoothing = 0) --------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grad", ["unbiased", "original"])
def test_zero_probability_draws_give_zero_gradient_not_nan(grad, dtype):
    """An underflowed softmax has exact zeros; drawing 3 of 5 distinct cells
    must then draw a = 0 cells, whose 0/0 terms used to make every score
    gradient NaN. A zero-probability draw contributes zero gradient."""
    from ats.core.distribution import attention_softmax
    from ats.core.sampling import WithoutReplacement

    scores = torch.tensor([[0.0, -1e4, -1e4, -1e4, -1e4]], dtype=dtype, requires_grad=True)
    a = attention_softmax(scores)
    assert a.tolist() == [[1.0, 0.0, 0.0, 0.0, 0.0]]
    sampler = WithoutReplacement(grad=grad)
    idx, probs = sampler.sample(a, 3, generator=torch.Generator().manual_seed(0))
    assert idx[0, 0].item() == 0 and probs.tolist() == [[1.0, 0.0, 0.0]]
    probs.retain_grad()
    feats = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [0.5, 4.0]]], dtype=dtype, requires_grad=True)
    sampler.expectation(feats, probs).sum().backward()
    # only the first draw carries mass: F = f_0, dF/df_0 = 1, the others 0
    assert feats.grad.tolist() == [[[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]]
    # the probability gradient is finite and zero for the a = 0 draws
    assert torch.isfinite(probs.grad).all() and probs.grad[0, 1:].tolist() == [0.0, 0.0]
    # the softmax Jacobian vanishes at a one-hot map: every score gets 0, not NaN
    assert scores.grad.tolist() == [[0.0] * 5]


def test_zero_probability_draw_with_replacement_is_guarded_too():
    feats = torch.ones(1, 2, 3, requires_grad=True)
    probs = torch.tensor([[1.0, 0.0]], requires_grad=True)
    expected_with_replacement(feats, probs).sum().backward()
    assert probs.grad.tolist() == [[1.5, 0.0]]
