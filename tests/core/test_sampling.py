"""Samplers: distribution (chi-square against the sequential law), Gumbel
sign, gathering, N-D unravelling, reproducibility and errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import chi2

from ats.core.sampling import WithoutReplacement, WithReplacement
from ats.registry import sampler as sampler_registry

P = torch.tensor([0.5, 0.25, 0.15, 0.1], dtype=torch.float64)
DRAWS = 100_000
# Critical chi-square value at p = 1e-4: a correct sampler fails 1 in 10^4 runs
# (and the seeds are fixed, so the outcome is deterministic).
ALPHA = 1e-4


def _chi_square_ok(counts: np.ndarray, expected_probs: np.ndarray) -> bool:
    expected = expected_probs * counts.sum()
    stat = ((counts - expected) ** 2 / expected).sum()
    return stat < chi2.ppf(1 - ALPHA, df=len(counts) - 1)


def _draw(sampler, p, n, draws=DRAWS, seed=0):
    g = torch.Generator().manual_seed(seed)
    attention = p.expand(draws, -1).contiguous()
    return sampler.sample(attention, n, generator=g)


def _plackett_luce(p, seq):
    prob, left = 1.0, 1.0
    for i in seq:
        prob *= p[i] / left
        left -= p[i]
    return prob


def test_without_replacement_first_pick_follows_attention():
    samples = _draw(WithoutReplacement(), P, 2)
    counts = np.bincount(samples.indices[:, 0, 0].numpy(), minlength=4)
    assert _chi_square_ok(counts, P.numpy())


def test_without_replacement_ordered_pairs_follow_plackett_luce():
    samples = _draw(WithoutReplacement(), P, 2, seed=1)
    pairs = list(itertools.permutations(range(4), 2))
    idx = samples.indices[..., 0].numpy()
    code = idx[:, 0] * 4 + idx[:, 1]
    counts = np.array([np.sum(code == i * 4 + j) for i, j in pairs])
    expected = np.array([_plackett_luce(P.numpy(), s) for s in pairs])
    assert expected.sum() == pytest.approx(1.0)
    assert _chi_square_ok(counts, expected)
    # and the pair order is the draw order, not sorted by index or probability
    assert counts[pairs.index((1, 0))] > 0.1 * DRAWS


def test_with_replacement_draws_are_iid_from_attention():
    samples = _draw(WithReplacement(), P, 2, seed=2)
    idx = samples.indices[..., 0].numpy()
    code = idx[:, 0] * 4 + idx[:, 1]
    counts = np.bincount(code, minlength=16)
    expected = np.outer(P.numpy(), P.numpy()).ravel()
    assert _chi_square_ok(counts, expected)


def test_gumbel_noise_has_the_right_sign():
    """A fork flipped it to +log(-log U); first picks became (0.63, 0.31, 0.06)."""
    p = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    samples = _draw(WithoutReplacement(), p, 1, seed=3)
    freq = np.bincount(samples.indices[:, 0, 0].numpy(), minlength=3) / DRAWS
    sigma = np.sqrt(p.numpy() * (1 - p.numpy()) / DRAWS)
    np.testing.assert_array_less(np.abs(freq - p.numpy()), 5 * sigma)


@pytest.mark.parametrize("space", [(7,), (3, 5), (2, 3, 4)])
@pytest.mark.parametrize("name", ["with_replacement", "without_replacement"])
def test_indices_unravel_row_major_and_probs_are_gathered(space, name):
    g = torch.Generator().manual_seed(4)
    attention = torch.softmax(torch.randn(3, int(np.prod(space)), generator=g), 1)
    attention = attention.reshape(3, *space)
    samples = sampler_registry.build(name).sample(attention, 5, generator=g)
    assert samples.indices.shape == (3, 5, len(space))
    assert samples.indices.dtype == torch.int64
    for b in range(3):
        for k in range(5):
            pos = tuple(samples.indices[b, k].tolist())
            assert samples.probs[b, k] == attention[b][pos]
    # row-major: flat index = ravel_multi_index
    flat = np.ravel_multi_index(tuple(samples.indices.reshape(-1, len(space)).T.numpy()), space)
    np.testing.assert_array_equal(
        attention.reshape(3, -1).gather(1, torch.from_numpy(flat).view(3, 5)).numpy(),
        samples.probs.numpy(),
    )


def test_without_replacement_positions_are_distinct():
    attention = torch.full((50, 10), 0.1)
    samples = WithoutReplacement().sample(attention, 10, generator=torch.Generator().manual_seed(0))
    for row in samples.indices[..., 0]:
        assert sorted(row.tolist()) == list(range(10))


def test_one_hot_attention():
    attention = torch.zeros(2, 6)
    attention[:, 4] = 1.0
    with_r = WithReplacement().sample(attention, 5)
    assert (with_r.indices == 4).all()
    without = WithoutReplacement().sample(attention, 3)
    assert (without.indices[:, 0, 0] == 4).all()
    assert (without.indices[:, 1:, 0] != 4).all()


def test_generator_makes_draws_reproducible():
    attention = torch.softmax(torch.randn(4, 8, 8), dim=-1).reshape(4, -1)
    attention = (attention / attention.sum(1, keepdim=True)).reshape(4, 8, 8)
    for s in (WithReplacement(), WithoutReplacement()):
        a = s.sample(attention, 6, generator=torch.Generator().manual_seed(5))
        b = s.sample(attention, 6, generator=torch.Generator().manual_seed(5))
        c = s.sample(attention, 6, generator=torch.Generator().manual_seed(6))
        assert torch.equal(a.indices, b.indices)
        assert not torch.equal(a.indices, c.indices)


def test_top_returns_the_most_probable_positions_in_order():
    attention = torch.tensor([[0.1, 0.4, 0.2, 0.3]])
    samples = WithoutReplacement().top(attention, 3)
    assert samples.indices[0, :, 0].tolist() == [1, 3, 2]
    assert samples.probs[0].tolist() == pytest.approx([0.4, 0.3, 0.2])


def test_sampler_errors_are_clear():
    attention = torch.full((2, 3, 3), 1 / 9)
    with pytest.raises(ValueError, match=r"n=10 distinct positions .* only 9 positions"):
        WithoutReplacement().sample(attention, 10)
    assert WithReplacement().sample(attention, 10).indices.shape == (2, 10, 2)
    with pytest.raises(ValueError, match="positive int"):
        WithReplacement().sample(attention, 0)
    with pytest.raises(ValueError, match="1 to 3 spatial dimensions"):
        WithReplacement().sample(torch.full((1, 2, 2, 2, 2), 1 / 16), 1)
    bad = attention.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        WithoutReplacement().sample(bad, 2)
    with pytest.raises(ValueError, match="grad must be"):
        WithoutReplacement(grad="exact")


def test_samplers_are_registered_with_their_estimators():
    assert {"with_replacement", "without_replacement"} <= set(sampler_registry.names())
    s = sampler_registry.build("without_replacement", grad="original")
    assert s.grad == "original" and not s.replace
    assert sampler_registry.build("with_replacement").replace
