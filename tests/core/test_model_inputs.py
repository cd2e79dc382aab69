"""AttentionSampling names what is wrong with its inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ats import AttentionSampling
from ats.core.extract import extract_patches


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


@pytest.mark.parametrize("high_dtype", [torch.uint8, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("low_dtype", [torch.float32, torch.float64], ids=str)
def test_patches_take_the_dtype_of_x_low(low_dtype, high_dtype):
    """The cast in AttentionSampling.forward, on the CPU (on a GPU it also
    meets float64 or half precision networks): patches have x_low's dtype
    whatever x_high's, integers scaled to [0, 1], and the networks run in it."""
    torch.manual_seed(0)
    model = AttentionSampling(nn.Conv2d(1, 1, 3, padding=1), _Features(), n_patches=2,
                              patch_size=8).to(low_dtype)
    g = torch.Generator().manual_seed(1)
    x_low = torch.rand(2, 1, 16, 16, generator=g, dtype=torch.float64).to(low_dtype)
    pixels = torch.randint(0, 256, (2, 1, 64, 64), generator=g)
    x_high = pixels.to(high_dtype) if high_dtype == torch.uint8 else \
        (pixels.to(torch.float64) / 255).to(high_dtype)
    out = model(x_low, x_high, generator=torch.Generator().manual_seed(2))
    assert out.patches.dtype == out.features.dtype == low_dtype
    expected = extract_patches(pixels.to(torch.float64) / 255, out.offsets, 8,
                               backend="reference")
    # integers are converted to float32 during extraction (docs/method.md, "Pipeline")
    tolerance = 1e-15 if low_dtype == high_dtype == torch.float64 else 1e-7
    torch.testing.assert_close(out.patches.double(), expected, rtol=0, atol=tolerance)
