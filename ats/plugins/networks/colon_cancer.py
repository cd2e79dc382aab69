"""Colon-cancer networks (docs/tasks/colon_cancer.md)."""

from __future__ import annotations

from torch import Tensor, nn

from ats.plugins.networks.layers import L2Normalize, keras_init
from ats.registry import attention, feature


@attention.register("colon_cancer")
class ColonAttention(nn.Module):
    """Conv 8, conv 8 (3x3, relu, padding 1) and a linear 1-channel conv:
    (B, 3, h, w) -> (B, 1, h, w); receptive field 0."""

    def __init__(self, *, in_channels: int = 3, channels: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, 1, 3, padding=1),
        )
        keras_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@feature.register("lenet")
class LeNetFeature(nn.Module):
    """LeNet-like net of attention-MIL (Ilse et al. 2018): conv 20 (5x5),
    pool 2, conv 50 (5x5), pool 2, a 500-unit dense layer and L2
    normalisation: (B, C, p, p) -> (B, 500). On 27x27 patches the sizes are
    23 -> 11 -> 7 -> 3. With ``global_pool`` any input size works."""

    def __init__(self, *, in_channels: int = 3, patch_size: int = 27, out_features: int = 500,
                 global_pool: bool = False) -> None:
        super().__init__()
        side = 1 if global_pool else ((patch_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"patch_size must be at least 16 for the LeNet feature network, "
                             f"got {patch_size}")
        self.out_features = out_features
        # global_pool: max-pool the last feature maps to 1x1, for inputs of any
        # size (the CNN baselines on whole images).
        pool = nn.AdaptiveMaxPool2d(1) if global_pool else nn.Identity()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 20, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5), nn.ReLU(), nn.MaxPool2d(2), pool,
            nn.Flatten(), nn.Linear(50 * side * side, out_features), nn.ReLU(),
            L2Normalize(),
        )
        keras_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
