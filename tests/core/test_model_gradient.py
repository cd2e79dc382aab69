"""The wired-up model's gradient is unbiased, by exact enumeration.

The model a task builds from its configuration (attention network -> softmax
with smoothing -> sampler -> gather -> extraction -> feature network ->
estimator -> classifier head) is run once per possible ordered draw of N
positions on a 2x3 attention map, with the draws forced; each gradient is
weighted by the probability of its draw. The sum must equal autograd of the
dense expectation ``head(sum_i a_i f_i)`` for every parameter (docs/method.md,
"Estimator with replacement", "The unbiased attention gradient"), and the
``wor_grad`` of the configuration must reach the sampler that is built.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from ats.core.extract import extract_patches
from ats.core.geometry import patch_offsets
from ats.registry import task as task_registry

LOW = (2, 3)  # the attention map: K = 6 positions
HIGH = (16, 24)  # 8 x_high pixels per x_low pixel
PATCH = 12


def _model(sampler: str, n: int, wor_grad: str = "unbiased"):
    task = task_registry.build("find_pattern")
    config = task.config(sampler=sampler, wor_grad=wor_grad, n_patches=n, patch_size=PATCH,
                         smoothing=0.05)
    torch.manual_seed(0)
    model = task.build_model(config).double()
    # a bias makes the head's gradient differ from the features' mean
    torch.nn.init.normal_(model.head.bias, generator=torch.Generator().manual_seed(1))
    return model


def _inputs():
    g = torch.Generator().manual_seed(2)
    x_low = torch.rand((1, 1, *LOW), generator=g, dtype=torch.float64) * 4
    x_high = torch.rand((1, 1, *HIGH), generator=g, dtype=torch.float64)
    upstream = torch.randn(4, generator=g, dtype=torch.float64)  # dL/dlogits
    return x_low, x_high, upstream


def _draws(k: int, n: int, replace: bool) -> list[tuple[int, ...]]:
    if replace:
        return list(itertools.product(range(k), repeat=n))
    return list(itertools.permutations(range(k), n))


def _probability(draw: tuple[int, ...], a: torch.Tensor, replace: bool) -> float:
    """P(draw) with replacement (i.i.d.) or without (Plackett-Luce, in order)."""
    p, taken = 1.0, 0.0
    for i in draw:
        p *= float(a[i]) if replace else float(a[i]) / (1.0 - taken)
        taken += float(a[i])
    return p


def _gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def _expected_gradient_over_every_draw(model, x_low, x_high, upstream):
    """sum over every ordered draw s of P(s) * d<upstream, logits_s>/dtheta, with
    the draws forced: batch item s of the model draws exactly s."""
    sampler = model.ats.sampler
    with torch.no_grad():
        a = model.ats.attention_map(x_low).reshape(-1)
    draws = _draws(a.numel(), model.ats.n_patches, sampler.replace)
    weights = torch.tensor([_probability(d, a, sampler.replace) for d in draws],
                           dtype=torch.float64)
    assert abs(float(weights.sum()) - 1.0) < 1e-12  # every draw, once
    forced = torch.tensor(draws)
    sampler._draw = lambda flat, n, generator: forced
    model.zero_grad()
    s = len(draws)
    out = model(x_low.expand(s, -1, -1, -1), x_high.expand(s, -1, -1, -1))
    assert torch.equal(out.ats.samples[:, :, 0] * LOW[1] + out.ats.samples[:, :, 1], forced)
    (weights[:, None] * out.logits * upstream).sum().backward()
    return _gradients(model)


def _dense_gradient(model, x_low, x_high, upstream):
    """d<upstream, head(sum_i a_i f_i)>/dtheta, with every position's patch."""
    model.zero_grad()
    a = model.ats.attention_map(x_low).reshape(1, -1)
    k = a.shape[1]
    grid = torch.stack(torch.unravel_index(torch.arange(k), LOW), -1)[None]  # (1, K, 2)
    offsets = patch_offsets(grid, sample_space=LOW, low_shape=LOW, high_shape=HIGH,
                            patch_size=(PATCH, PATCH))
    patches = extract_patches(x_high, offsets, PATCH, backend="reference")  # (1, K, 1, p, p)
    features = model.ats.feature(patches.reshape(k, 1, PATCH, PATCH))  # (K, D)
    phi = (a.reshape(k, 1) * features).sum(0, keepdim=True)
    (model.head(phi) * upstream).sum().backward()
    return _gradients(model)


@pytest.mark.parametrize("sampler,n", [
    ("without_replacement", 1), ("without_replacement", 2), ("without_replacement", 3),
    ("with_replacement", 2), ("with_replacement", 3),
])
def test_the_models_gradient_is_unbiased_for_every_parameter(sampler, n):
    model = _model(sampler, n)
    x_low, x_high, upstream = _inputs()
    expected = _dense_gradient(model, x_low, x_high, upstream)
    got = _expected_gradient_over_every_draw(model, x_low, x_high, upstream)
    for part in ("ats.attention.", "ats.feature.", "head."):  # gradients worth comparing
        assert sum(float(v.norm()) for k, v in expected.items() if k.startswith(part)) > 1e-3
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-9, atol=1e-12, msg=name)


def test_wor_grad_original_in_a_config_reaches_the_sampler_and_biases_the_attention():
    """The original's attention gradient (docs/method.md, "The original's
    attention gradient, and its bias"): the features' and the head's
    gradients stay exact, the attention network's do not."""
    x_low, x_high, upstream = _inputs()
    model = _model("without_replacement", 3, wor_grad="original")
    assert model.ats.sampler.grad == "original"
    expected = _dense_gradient(model, x_low, x_high, upstream)
    got = _expected_gradient_over_every_draw(model, x_low, x_high, upstream)
    def error(part):
        names = [k for k in expected if k.startswith(part)]
        return max(float((got[k] - expected[k]).abs().max()) for k in names) / \
            max(float(expected[k].abs().max()) for k in names)

    assert error("ats.attention.") > 1e-3
    assert error("ats.feature.") < 1e-9 and error("head.") < 1e-9
