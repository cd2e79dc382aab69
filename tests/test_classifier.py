"""The models a task builds (ats/classifier.py): attention sampling with a
linear head, and the CNN baselines on one view; what they declare to the
engine (stochastic, the sampling record) and the input checks they make."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ats.classifier import ATSClassifier, Classifier, CNNClassifier
from ats.core.model import AttentionSampling
from ats.core.sampling import WithReplacement
from ats.plugins.networks.small import SmallAttention, SmallFeature


def _ats(**kwargs) -> ATSClassifier:
    torch.manual_seed(0)
    options = {"n_patches": 3, "patch_size": 16, "smoothing": 1e-4, **kwargs}
    return ATSClassifier(AttentionSampling(SmallAttention(), SmallFeature(), **options),
                         feature_dim=32, num_classes=4)


def _inputs(b=2, low=16, high=128):
    g = torch.Generator().manual_seed(1)
    return (torch.rand(b, 1, low, low, generator=g),
            torch.randint(0, 256, (b, 1, high, high), generator=g, dtype=torch.uint8))


def test_the_ats_model_is_its_head_on_the_sampled_estimate():
    model = _ats()
    x_low, x_high = _inputs()
    out = model(x_low, x_high, generator=torch.Generator().manual_seed(2))
    again = model.ats(x_low, x_high, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(out.logits, model.head(again.features), rtol=0, atol=0)
    assert out.logits.shape == (2, 4) and out.ats.attention.shape == (2, 16, 16)
    assert isinstance(model, Classifier) and model.stochastic is True
    top = model(x_low, x_high, deterministic=True)  # top-N: no randomness
    torch.testing.assert_close(top.logits, model(x_low, x_high, deterministic=True).logits)


def test_the_ats_model_refuses_inputs_it_cannot_work_with():
    model = _ats(n_patches=300)
    with pytest.raises(ValueError, match=r"n_patches=300 is larger than the attention map "
                                         r"\(16, 16\) \(256 positions\)"):
        model.check_input_shapes((1, 16, 16), (1, 128, 128))
    _ats(n_patches=300, sampler=WithReplacement()).check_input_shapes((1, 16, 16), (1, 128, 128))
    with pytest.raises(ValueError, match=r"patch_size 16 does not fit the "
                                         r"high-resolution image \(12, 128\)"):
        _ats().check_input_shapes((1, 16, 16), (1, 12, 128))
    with pytest.raises(ValueError, match="does not fit the high-resolution image"):
        _ats(patch_size=(16, 16)).check_input_shapes((1, 16, 16), (1, 128, 128, 128))
    _ats().check_input_shapes((1, 16, 16), (1, 16, 16))  # a patch as large as the image fits


class _Spy(nn.Module):
    """Records its input; features are the input's mean and max per item."""

    out_features = 2

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x)
        return torch.stack([x.flatten(1).mean(1), x.flatten(1).amax(1)], 1)


def test_the_low_baseline_sees_x_low_only():
    spy = _Spy()
    model = CNNClassifier(spy, feature_dim=2, num_classes=3, view="low")
    x_low, _ = _inputs()
    out = model(x_low, "x_high is not read")
    assert spy.seen[0] is x_low and out.ats is None and model.stochastic is False
    torch.testing.assert_close(out.logits, model.head(spy(x_low)))


@pytest.mark.parametrize("kind", ["uint8", "uint16", "float64", "numpy uint8"])
def test_the_full_baseline_sees_x_high_in_0_1_with_x_lows_dtype(kind):
    spy = _Spy()
    model = CNNClassifier(spy, feature_dim=2, num_classes=3, view="full")
    x_low, pixels = _inputs()
    expected = pixels.double() / 255
    x_high = {
        "uint8": pixels,
        "uint16": pixels.to(torch.int32).mul(257).to(torch.uint16),  # 255 * 257 = 65535
        "float64": expected,
        "numpy uint8": pixels.numpy(),
    }[kind]
    model(x_low, x_high)
    seen = spy.seen[0]
    assert seen.dtype == torch.float32 and seen.shape == (2, 1, 128, 128)
    torch.testing.assert_close(seen.double(), expected, rtol=0, atol=1e-7)


def test_a_baseline_view_is_low_or_full():
    with pytest.raises(ValueError, match="view must be 'low' or 'full', got 'high'"):
        CNNClassifier(_Spy(), feature_dim=2, num_classes=3, view="high")
