"""AttentionSampling names what is wrong with its inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ats import AttentionSampling


class _Features(nn.Module):
    out_features = 4

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveMaxPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.net(x)


def test_x_high_as_a_list_is_named_as_a_list():
    model = AttentionSampling(nn.Conv2d(1, 1, 3, padding=1), _Features(), n_patches=2,
                              patch_size=8)
    x_low = torch.rand(2, 1, 16, 16)
    images = [torch.rand(1, 64, 64), torch.rand(1, 64, 64)]
    with pytest.raises(TypeError, match=r"x_high must be a torch.Tensor or numpy.ndarray of "
                                        r"shape \(B, C, \*high\), got list \(stack the images"):
        model(x_low, images)
    with pytest.raises(ValueError, match=r"x_high must have shape \(B, C, \*high\) with 2 "
                                         r"spatial dims, got \(1, 64, 64\)"):
        model(x_low, images[0])
