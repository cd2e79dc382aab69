"""Speed-limits networks (docs/tasks/speed_limits.md): valid-conv attention
with a max-pool of 8, and a pre-activation ResNet feature network."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ats.plugins.networks.layers import (
    L2Normalize,
    SameConv2d,
    keras_batchnorm,
    keras_init,
)
from ats.registry import attention, feature


@attention.register("speed_limits")
class SpeedLimitsAttention(nn.Module):
    """Conv 8/16/32 (3x3, relu, valid), a linear 1-channel conv, max-pool 8.

    (B, 3, 288, 384) -> (B, 1, 35, 47). The four valid 3x3 convs give a
    receptive field of 9. ``l2`` is the Keras l2 penalty on the first three
    convs' kernels, returned by :meth:`regularization` for the loss.
    """

    receptive_field = 9

    def __init__(self, *, in_channels: int = 3, pool: int = 8, l2: float = 1e-5) -> None:
        super().__init__()
        self.convs = nn.ModuleList([
            nn.Conv2d(in_channels, 8, 3), nn.Conv2d(8, 16, 3), nn.Conv2d(16, 32, 3),
        ])
        self.score = nn.Conv2d(32, 1, 3)
        self.pool = nn.MaxPool2d(pool)
        self.l2 = l2
        keras_init(self)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = torch.relu(conv(x))
        return self.pool(self.score(x))

    def regularization(self) -> Tensor:
        """Keras ``l2(1e-5)``: ``l2 * sum w^2`` over the first three kernels."""
        return self.l2 * sum((c.weight ** 2).sum() for c in self.convs)


class PreActBlock(nn.Module):
    """BN-ReLU, then conv3x3(stride) - BN - ReLU - conv3x3, plus a shortcut of
    the pre-activated input: a 1x1 strided conv when the stride or width
    changes, else the pre-activated input itself, as in the original's
    ``block`` (Keras "same" padding, no biases)."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = keras_batchnorm(in_channels)
        self.conv1 = SameConv2d(in_channels, channels, 3, stride=stride, bias=False)
        self.bn2 = keras_batchnorm(channels)
        self.conv2 = SameConv2d(channels, channels, 3, bias=False)
        self.shortcut = None
        if stride != 1 or in_channels != channels:
            self.shortcut = SameConv2d(in_channels, channels, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = torch.relu(self.bn1(x))
        skip = self.shortcut(pre) if self.shortcut is not None else pre
        out = self.conv2(torch.relu(self.bn2(self.conv1(pre))))
        return out + skip


@feature.register("preact_resnet")
class PreActResNet(nn.Module):
    """Pre-activation ResNet of the speed-limits task: (B, C, p, p) -> (B, D).

    A 3x3 stem (stride 1) and one block per further stride; on 100x100
    patches the sizes are 100 -> 50 -> 25 -> 13; final BN-ReLU, global
    average pooling and L2 normalisation.
    """

    def __init__(self, *, in_channels: int = 3, strides: tuple[int, ...] = (1, 2, 2, 2),
                 filters: tuple[int, ...] = (32, 32, 32, 32)) -> None:
        super().__init__()
        if len(strides) != len(filters):
            raise ValueError(f"strides and filters must have the same length, got "
                             f"{len(strides)} and {len(filters)}")
        self.out_features = filters[-1]
        self.stem = SameConv2d(in_channels, filters[0], 3, stride=strides[0], bias=False)
        self.blocks = nn.Sequential(*[
            PreActBlock(filters[i - 1], filters[i], strides[i]) for i in range(1, len(filters))
        ])
        self.head = nn.Sequential(
            keras_batchnorm(filters[-1]), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            L2Normalize(),
        )
        keras_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))
