"""The task networks: output shapes of docs/tasks/, Keras defaults, padding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ats.plugins.networks.layers import SameConv2d, keras_init
from ats.registry import attention, feature


@pytest.mark.parametrize("name,kwargs,shape,expected", [
    ("mnist", {}, (2, 1, 180, 180), (2, 1, 180, 180)),
    ("speed_limits", {}, (2, 3, 288, 384), (2, 1, 35, 47)),
    ("colon_cancer", {}, (2, 3, 100, 100), (2, 1, 100, 100)),
    ("small_cnn", {}, (2, 1, 16, 16), (2, 1, 16, 16)),
])
def test_attention_networks_give_the_papers_map_sizes(name, kwargs, shape, expected):
    assert attention.build(name, **kwargs)(torch.zeros(shape)).shape == expected


@pytest.mark.parametrize("name,kwargs,shape,dim", [
    ("mnist", {}, (3, 1, 50, 50), 32),
    ("preact_resnet", {}, (3, 3, 100, 100), 32),
    ("lenet", {"patch_size": 27}, (3, 3, 27, 27), 500),
    ("lenet", {"global_pool": True}, (3, 3, 120, 90), 500),
    ("small_cnn", {}, (3, 1, 16, 16), 32),
])
def test_feature_networks_give_unit_vectors(name, kwargs, shape, dim):
    net = feature.build(name, **kwargs)
    out = net(torch.rand(shape))
    assert out.shape == (shape[0], dim) and net.out_features == dim
    torch.testing.assert_close(out.norm(dim=1), torch.ones(shape[0]))


def test_preact_resnet_stages_shrink_100_to_13():
    net = feature.build("preact_resnet")
    x = net.stem(torch.zeros(1, 3, 100, 100))
    sizes = [x.shape[-1]]
    for block in net.blocks:
        x = block(x)
        sizes.append(x.shape[-1])
    assert sizes == [100, 50, 25, 13]
    bn = net.head[0]
    assert (bn.momentum, bn.eps) == (0.01, 1e-3)  # Keras's 0.99 and 1e-3


def test_same_conv_pads_like_tensorflow():
    """Stride 2 on an even input pads (0, 1), not PyTorch's (1, 1)."""
    torch.manual_seed(0)
    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    x = torch.randn(1, 1, 8, 8)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
    torch.testing.assert_close(conv(x), expected)
    odd = torch.randn(1, 1, 25, 25)  # odd: total padding 2, split (1, 1)
    torch.testing.assert_close(conv(odd), F.conv2d(odd, conv.weight, stride=2, padding=1))


def test_keras_initialisation_and_the_speed_limits_l2_penalty():
    net = attention.build("speed_limits")
    assert all(float(c.bias.detach().abs().sum()) == 0 for c in net.convs)
    w = net.convs[0].weight
    bound = (6 / (w.shape[1] * 9 + w.shape[0] * 9)) ** 0.5  # glorot uniform
    assert float(w.detach().abs().max()) <= bound
    expected = 1e-5 * sum(float((c.weight.detach() ** 2).sum()) for c in net.convs)
    assert float(net.regularization().detach()) == pytest.approx(expected)
    lin = keras_init(torch.nn.Linear(4, 2))
    assert float(lin.bias.detach().abs().sum()) == 0


def test_preact_resnet_identity_shortcut_adds_the_pre_activated_input():
    """A stride-1 block of equal width has no shortcut conv; like the
    original's ``block`` it adds relu(bn(x)), not the raw x."""
    torch.manual_seed(0)
    net = feature.build("preact_resnet", strides=(1, 1, 2, 2))
    block = net.blocks[0]
    assert block.shortcut is None and net.blocks[1].shortcut is not None
    x = torch.randn(2, 32, 20, 20)  # negative values: relu(bn(x)) != x
    pre = torch.relu(block.bn1(x))
    expected = block.conv2(torch.relu(block.bn2(block.conv1(pre)))) + pre
    torch.testing.assert_close(block(x), expected)
    assert (pre - x).abs().max() > 0.1  # so adding the raw x would differ
    out = net(torch.rand(3, 3, 40, 40))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
