"""Small generic networks for quick experiments and tests."""

from __future__ import annotations

from torch import Tensor, nn

from ats.plugins.networks.layers import L2Normalize
from ats.registry import attention, feature


@attention.register("small_cnn")
class SmallAttention(nn.Module):
    """Conv 3x3 (tanh) and a linear 1-channel conv 3x3, "same" padding:
    (B, C, h, w) -> scores (B, 1, h, w); receptive field 0."""

    def __init__(self, *, in_channels: int = 1, channels: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1), nn.Tanh(),
            nn.Conv2d(channels, 1, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@feature.register("small_cnn")
class SmallFeature(nn.Module):
    """Two valid 3x3 convs (relu), global max pooling, L2 normalisation:
    (B, C, p, p) -> (B, out_features)."""

    def __init__(self, *, in_channels: int = 1, channels: int = 16, out_features: int = 32) -> None:
        super().__init__()
        self.out_features = out_features
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3), nn.ReLU(inplace=True),
            nn.Conv2d(channels, out_features, 3), nn.ReLU(inplace=True),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), L2Normalize(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
