"""Resizing, dtype helpers and augmentations of ats.data.transforms, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ats.data.transforms import (
    ColorJitter,
    ImageLinearTransform,
    ImagePan,
    RandomDihedral,
    as_float_image,
    dihedral,
    hsv_to_rgb,
    item_rng,
    linear_transform,
    pan,
    resize_bilinear,
    rgb_to_hsv,
    scaled_size,
)

# A 2x3 image resized to 3x2; values worked out by hand in the comments below.
TINY = torch.tensor([[0.0, 1.0, 2.0],
                     [3.0, 4.0, 5.0]])


def test_resize_asymmetric_hand_values():
    # rows: src = d * 2/3 -> 0, 0.667, 1.333 (last clamps to row 1);
    # cols: src = d * 3/2 -> 0, 1.5.
    out = resize_bilinear(TINY, (3, 2), "asymmetric")
    expected = torch.tensor([[0.0, 1.5],
                             [2.0, 3.5],
                             [3.0, 4.5]])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_resize_half_pixel_hand_values():
    # rows: src = (d + .5) * 2/3 - .5 -> -0.167 (clamped to 0), 0.5, 1.167 (row 1);
    # cols: src = (d + .5) * 3/2 - .5 -> 0.25, 1.75.
    out = resize_bilinear(TINY, (3, 2), "half_pixel")
    expected = torch.tensor([[0.25, 1.75],
                             [1.75, 3.25],
                             [3.25, 4.75]])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_resize_default_is_asymmetric():
    torch.testing.assert_close(resize_bilinear(TINY, (3, 2)), resize_bilinear(TINY, (3, 2), "asymmetric"))


def test_resize_upsample_by_two_asymmetric():
    x = torch.tensor([[0.0, 2.0, 6.0]])
    # src = d / 2: 0, .5, 1, 1.5, 2, 2.5 (-> clamps to the last pixel)
    out = resize_bilinear(x, (1, 6), "asymmetric")
    torch.testing.assert_close(out, torch.tensor([[0.0, 1.0, 2.0, 4.0, 6.0, 6.0]]))


def test_resize_integer_downscale_picks_pixels():
    x = torch.arange(100.0).reshape(10, 10)
    # factor 5: asymmetric samples 0 and 5; half-pixel samples the centres 2 and 7.
    torch.testing.assert_close(resize_bilinear(x, (2, 2), "asymmetric"), x[0::5, 0::5])
    torch.testing.assert_close(resize_bilinear(x, (2, 2), "half_pixel"), x[2::5, 2::5])


@pytest.mark.parametrize("size", [(7, 11), (29, 41), (64, 90), (1, 1), (13, 120)])
def test_resize_half_pixel_matches_interpolate(size):
    x = torch.rand(2, 3, 29, 41, generator=torch.Generator().manual_seed(0))
    ours = resize_bilinear(x, size, "half_pixel")
    ref = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def test_resize_keeps_leading_dims_and_same_size_is_identity():
    x = torch.rand(2, 3, 5, 7)
    for c in ("asymmetric", "half_pixel"):
        out = resize_bilinear(x, (5, 7), c)
        assert out.shape == (2, 3, 5, 7)
        torch.testing.assert_close(out, x)


def test_resize_uint8_values_kept():
    x = torch.tensor([[0, 200], [100, 50]], dtype=torch.uint8)
    out = resize_bilinear(x, (1, 1), "asymmetric")
    assert out.dtype == torch.float32 and out.item() == 0.0
    out = resize_bilinear(x, (2, 4), "asymmetric")
    torch.testing.assert_close(out[0], torch.tensor([0.0, 100.0, 200.0, 200.0]))


def test_resize_errors():
    with pytest.raises(ValueError, match="coordinates must be one of"):
        resize_bilinear(TINY, (2, 2), "align_corners")
    with pytest.raises(ValueError, match="size must be two positive integers"):
        resize_bilinear(TINY, (0, 2))
    with pytest.raises(ValueError, match=">= 2 dims"):
        resize_bilinear(torch.zeros(3), (2, 2))


def test_scaled_size():
    assert scaled_size((960, 1280), 0.3) == (288, 384)
    assert scaled_size((500, 500), 0.2) == (100, 100)
    assert scaled_size((1500, 1500), 0.12) == (180, 180)
    with pytest.raises(ValueError, match="scale"):
        scaled_size((10, 10), 0.01)


def test_as_float_image():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8)
    torch.testing.assert_close(as_float_image(x), torch.tensor([0.0, 0.2, 1.0]))
    y = torch.tensor([1.5, -0.25], dtype=torch.float64)
    assert as_float_image(y).dtype == torch.float32 and as_float_image(y).tolist() == [1.5, -0.25]
    with pytest.raises(ValueError, match="uint8 or floating"):
        as_float_image(torch.tensor([1, 2], dtype=torch.int32))


def test_item_rng_deterministic_and_distinct():
    a = item_rng(3, 1, 7).random(4)
    np.testing.assert_array_equal(a, item_rng(3, 1, 7).random(4))
    for other in [(3, 2, 7), (3, 1, 8), (4, 1, 7)]:
        assert not np.array_equal(a, item_rng(*other).random(4))
    with pytest.raises(ValueError, match="epoch"):
        item_rng(0, -1, 0)


def test_linear_transform_exact_and_unclipped():
    x = torch.tensor([[[0.0, 0.5, 1.0]]])
    out = ImageLinearTransform((1.2, 1.2), (0.1, 0.1), p=1.0)(x, np.random.default_rng(0))
    torch.testing.assert_close(out, torch.tensor([[[0.1, 0.7, 1.3]]]), rtol=0, atol=1e-6)
    assert out.max().item() > 1.0  # no clipping, as the original
    with pytest.raises(ValueError, match="as_float_image"):
        linear_transform(torch.zeros(1, 2, 2, dtype=torch.uint8), 1.0, 0.0)


def test_linear_transform_probability_and_ranges():
    aug = ImageLinearTransform()
    rng = np.random.default_rng(123)
    x = torch.tensor([[[0.0, 1.0]]])
    n = 4000
    outs = torch.stack([aug(x, rng) for _ in range(n)])[:, 0, 0]
    applied = ~((outs[:, 0] == 0) & (outs[:, 1] == 1))
    frac = applied.float().mean().item()
    # Binomial(4000, 0.8): std 0.0063, allow 5 std.
    assert abs(frac - 0.8) < 5 * np.sqrt(0.8 * 0.2 / n)
    b = outs[applied, 0]
    a = outs[applied, 1] - b
    assert a.min() >= 0.8 - 1e-6 and a.max() <= 1.2 + 1e-6
    assert b.min() >= -0.1 - 1e-6 and b.max() <= 0.1 + 1e-6
    # U(0.8, 1.2) mean 1, std 0.115; U(-.1, .1) mean 0, std 0.058.
    m = applied.sum().item()
    assert abs(a.mean().item() - 1.0) < 5 * 0.4 / np.sqrt(12 * m)
    assert abs(b.mean().item()) < 5 * 0.2 / np.sqrt(12 * m)


def test_pan_hand_values():
    x = torch.arange(1, 13).reshape(1, 3, 4)
    right_down = pan(x, 1, 2)
    expected = torch.tensor([[[0, 0, 0, 0],
                              [0, 0, 1, 2],
                              [0, 0, 5, 6]]])
    assert torch.equal(right_down, expected)
    left_up = pan(x, -1, -1)
    expected = torch.tensor([[[6, 7, 8, 0],
                              [10, 11, 12, 0],
                              [0, 0, 0, 0]]])
    assert torch.equal(left_up, expected)
    assert torch.equal(pan(x, 0, 0), x)
    assert torch.equal(pan(x, 0, 4), torch.zeros_like(x))


def test_image_pan_probability_and_range():
    aug = ImagePan(100, p=0.8)
    rng = np.random.default_rng(7)
    n = 4000
    shifts = [aug.sample(rng) for _ in range(n)]
    applied = [s for s in shifts if s is not None]
    assert abs(len(applied) / n - 0.8) < 5 * np.sqrt(0.8 * 0.2 / n)
    dy, dx = np.array(applied).T
    assert dy.min() == -100 and dy.max() == 100 and dx.min() == -100 and dx.max() == 100
    assert abs(np.corrcoef(dy, dx)[0, 1]) < 5 / np.sqrt(len(applied))  # independent axes
    only_x = ImagePan(10, horizontally=True, vertically=False, p=1.0)
    assert all(only_x.sample(rng)[0] == 0 for _ in range(50))


def test_image_pan_applies_the_sampled_shift():
    x = torch.rand(3, 20, 30)
    aug = ImagePan(8, p=1.0)
    dy, dx = aug.sample(np.random.default_rng(5))
    assert (dy, dx) != (0, 0)
    assert torch.equal(aug(x, np.random.default_rng(5)), pan(x, dy, dx))


def test_dihedral_all_eight_distinct_and_hand_values():
    x = torch.tensor([[[1, 2], [3, 4]]])
    outs = [dihedral(x, k) for k in range(8)]
    assert len({tuple(o.flatten().tolist()) for o in outs}) == 8
    assert torch.equal(outs[1], torch.tensor([[[2, 4], [1, 3]]]))  # a counter-clockwise quarter turn
    assert torch.equal(outs[4], torch.tensor([[[2, 1], [4, 3]]]))  # a left-right flip
    draws = {tuple(RandomDihedral()(x, np.random.default_rng(s)).flatten().tolist()) for s in range(200)}
    assert len(draws) == 8
    with pytest.raises(ValueError, match="0..7"):
        dihedral(x, 8)


def test_hsv_round_trip_and_skimage_reference():
    from skimage.color import rgb2hsv

    img = torch.rand(3, 16, 24, generator=torch.Generator().manual_seed(1))
    img[:, :2] = 0.4  # grey pixels: undefined hue, set to 0 as skimage does
    hsv = rgb_to_hsv(img)
    np.testing.assert_allclose(hsv.permute(1, 2, 0).numpy(), rgb2hsv(img.permute(1, 2, 0).numpy()), atol=1e-6)
    torch.testing.assert_close(hsv_to_rgb(hsv), img, rtol=0, atol=1e-6)
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    shifted = rgb_to_hsv(red) + torch.tensor([1 / 3, 0.0, 0.0]).view(3, 1, 1)
    torch.testing.assert_close(hsv_to_rgb(shifted).flatten(), torch.tensor([0.0, 1.0, 0.0]))


def test_color_jitter_zero_is_identity_and_brightness_is_a_global_factor():
    img = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(2)) * 0.8
    assert torch.equal(ColorJitter(0, 0, 0, 0)(img, np.random.default_rng(0)), img)
    out = ColorJitter(0.1, 0, 0, 0)(img, np.random.default_rng(0))
    ratio = out / img
    f = ratio.mean().item()
    assert 0.9 <= f <= 1.1 and abs(f - 1) > 1e-4
    torch.testing.assert_close(ratio, torch.full_like(ratio, f), rtol=0, atol=1e-5)


def test_color_jitter_saturation_zero_factor_gives_grey_and_output_in_range():
    img = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(3))
    # saturation strength 1 draws factors in [0, 2]; check the [0,1] clipping over many draws.
    aug = ColorJitter(0.5, 0.5, 1.0, 0.5)
    for s in range(20):
        out = aug(img, np.random.default_rng(s))
        assert out.shape == img.shape and out.min() >= 0 and out.max() <= 1
    a = ColorJitter(0.1, 0.1, 0.1, 0.1)
    torch.testing.assert_close(a(img, np.random.default_rng(9)), a(img, np.random.default_rng(9)))
    assert not torch.equal(a(img, np.random.default_rng(9)), a(img, np.random.default_rng(10)))
