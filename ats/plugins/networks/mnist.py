"""Megapixel MNIST networks (docs/tasks/mega_mnist.md)."""

from __future__ import annotations

from torch import Tensor, nn

from ats.plugins.networks.layers import L2Normalize, keras_init
from ats.registry import attention, feature


@attention.register("mnist")
class MNISTAttention(nn.Module):
    """Two 8-channel tanh convs and a linear 1-channel conv, all 3x3 "same"
    (zero padding): (B, C, h, w) -> scores (B, 1, h, w); receptive field 0."""

    def __init__(self, *, in_channels: int = 1, channels: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1), nn.Tanh(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.Tanh(),
            nn.Conv2d(channels, 1, 3, padding=1),
        )
        keras_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@feature.register("mnist")
class MNISTFeature(nn.Module):
    """Conv 7x7 then three conv 3x3 (32 channels, relu, valid), global max
    pooling and L2 normalisation: (B, C, p, p) -> (B, 32).

    The ReLUs work in place: a convolution's backward needs its input, not its
    output, so the output can be overwritten, which saves a pass over the
    largest activations of the training step."""

    def __init__(self, *, in_channels: int = 1, channels: int = 32) -> None:
        super().__init__()
        self.out_features = channels
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, channels, 7), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3), nn.ReLU(inplace=True),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), L2Normalize(),
        )
        keras_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
