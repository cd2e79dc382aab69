"""Attention softmax with smoothing and the entropy regulariser's sign."""

from __future__ import annotations

import pytest
import torch

from ats.core.distribution import attention_softmax
from ats.core.regularizers import attention_entropy, entropy_regularizer


@pytest.mark.parametrize("shape", [(3, 10), (3, 1, 6, 7), (2, 4, 5), (2, 1, 3, 4, 5)])
@pytest.mark.parametrize("smoothing", [0.0, 1e-3, 0.5])
def test_softmax_over_the_whole_map_with_a_floor(shape, smoothing):
    g = torch.Generator().manual_seed(len(shape) * 10 + int(smoothing * 1000))
    scores = torch.randn(*shape, generator=g, dtype=torch.float64) * 20  # peaked on purpose
    a = attention_softmax(scores, smoothing)
    squeezed = shape[:1] + shape[2:] if len(shape) >= 3 and shape[1] == 1 else shape
    assert a.shape == squeezed
    flat = a.reshape(shape[0], -1)
    torch.testing.assert_close(flat.sum(1), torch.ones(shape[0], dtype=torch.float64))
    k = flat.shape[1]
    assert (flat >= smoothing / k - 1e-15).all()
    # exactly (1 - s) softmax + s / K over the whole map
    softmax = torch.softmax(scores.reshape(shape[0], -1), 1)
    torch.testing.assert_close(flat, (1 - smoothing) * softmax + smoothing / k, rtol=0,
                               atol=1e-15)


def test_smoothed_values_by_hand():
    """scores (0, log 3) -> softmax (1/4, 3/4); s = 0.2, K = 2:
    0.8 * (1/4, 3/4) + 0.1 = (0.3, 0.7). Over a (1, 2, 2) map the softmax
    spans all 4 positions, not rows."""
    scores = torch.tensor([[0.0, torch.log(torch.tensor(3.0, dtype=torch.float64))]],
                          dtype=torch.float64)
    torch.testing.assert_close(attention_softmax(scores, 0.2),
                               torch.tensor([[0.3, 0.7]], dtype=torch.float64))
    grid = torch.log(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64))
    torch.testing.assert_close(attention_softmax(grid, 0.5),  # 0.5 * i/10 + 0.5/4
                               torch.tensor([[[0.175, 0.225], [0.275, 0.325]]],
                                            dtype=torch.float64))


def test_softmax_rejects_bad_smoothing():
    with pytest.raises(ValueError, match=r"smoothing must be in \[0, 1\)"):
        attention_softmax(torch.zeros(1, 4), 1.0)
    with pytest.raises(ValueError, match=r"smoothing must be in \[0, 1\)"):
        attention_softmax(torch.zeros(1, 4), -0.1)


def test_entropy_of_uniform_and_one_hot():
    uniform = torch.full((2, 8), 1 / 8, dtype=torch.float64)
    torch.testing.assert_close(
        attention_entropy(uniform), torch.full((2,), torch.log(torch.tensor(8.0)).item(),
                                               dtype=torch.float64), atol=1e-5, rtol=0)
    one_hot = torch.zeros(1, 8, dtype=torch.float64)
    one_hot[0, 3] = 1
    assert attention_entropy(one_hot).abs().item() < 1e-5


@pytest.mark.parametrize("strength,direction", [(0.5, +1), (-0.5, -1)])
def test_one_sgd_step_moves_entropy_in_the_documented_direction(strength, direction):
    scores = torch.randn(4, 5, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    before = attention_entropy(attention_softmax(scores)).mean()
    entropy_regularizer(attention_softmax(scores), strength).backward()
    with torch.no_grad():
        scores -= 0.5 * scores.grad
    after = attention_entropy(attention_softmax(scores)).mean()
    assert direction * (after - before).item() > 1e-3


def test_regularizer_value_matches_the_original_formula():
    g = torch.Generator().manual_seed(3)
    a = attention_softmax(torch.randn(3, 10, generator=g, dtype=torch.float64))
    expected = 0.01 * (a * torch.log(a + 1e-6)).sum() / 3
    torch.testing.assert_close(entropy_regularizer(a, 0.01), expected)
