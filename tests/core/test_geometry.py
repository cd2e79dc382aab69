"""Sample index -> patch offset mapping (docs/geometry.md, "Offsets from samples"
and "Worked examples").

The five cases pinned by the original ``tests/data/test_from_tensors.py``
(x_high 1000x1000, x_low 100x100), including half-to-even rounding of 30.5,
and the worked examples of the three tasks, as exact integers.
"""

from __future__ import annotations

import pytest
import torch

from ats.core.extract import extract_patches
from ats.core.geometry import patch_offsets


def samples(*cells) -> torch.Tensor:
    """(1, N, d) int64 samples from N index tuples."""
    return torch.tensor([list(cells)], dtype=torch.int64)


@pytest.fixture(scope="module")
def x_high() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand((2, 3, 1000, 1000), generator=g)


# -- the repo's five cases -------------------------------------------------------------


def test_case_1_whole_low_image():
    """Space (1, 1), previous (100, 100), patch 100, levels 0->0: all of x_low."""
    off = patch_offsets(samples((0, 0)), (1, 1), (100, 100), (100, 100), (100, 100))
    assert off.tolist() == [[[0, 0]]]
    x_low = torch.rand(1, 3, 100, 100)
    assert torch.equal(extract_patches(x_low, off, 100, backend="reference")[:, 0], x_low)


def test_case_2_centre_sample(x_high):
    """Sample 12 of 25, step 40: start 480 + 20 - 25 = 475."""
    off = patch_offsets(samples((12, 12)), (25, 25), (100, 100), (1000, 1000), 50)
    assert off.tolist() == [[[475, 475]]]
    p = extract_patches(x_high[:1], off, 50, backend="reference")
    assert torch.equal(p[0, 0], x_high[0, :, 475:525, 475:525])


def test_case_3_top_left_zero_corner(x_high):
    """Sample 0 of 25: start -5, patch[5:, 5:] = x_high[:45, :45], corner zero."""
    off = patch_offsets(samples((0, 0)), (25, 25), (100, 100), (1000, 1000), 50)
    assert off.tolist() == [[[-5, -5]]]
    p = extract_patches(x_high[:1], off, 50, backend="reference")[0, 0]
    assert torch.equal(p[:, 5:, 5:], x_high[0, :, :45, :45])
    assert torch.count_nonzero(p[:, :5, :5]) == 0
    assert torch.count_nonzero(p[:, :5, :]) == 0 and torch.count_nonzero(p[:, :, :5]) == 0


def test_case_4_finer_grid(x_high):
    """Sample 0 of 100: step 10, start -20, patch[20:, 20:] = x_high[:30, :30]."""
    off = patch_offsets(samples((0, 0)), (100, 100), (100, 100), (1000, 1000), 50)
    assert off.tolist() == [[[-20, -20]]]
    p = extract_patches(x_high[:1], off, 50, backend="reference")[0, 0]
    assert torch.equal(p[:, 20:, 20:], x_high[0, :, :30, :30])
    assert torch.count_nonzero(p[:, :20]) == 0


def test_case_5_rounds_half_to_even(x_high):
    """Levels 1->1, space 1000, sample 55: 55 + 0.5 - 25 = 30.5 -> 30 (not 31)."""
    off = patch_offsets(samples((55, 55)), (1000, 1000), (1000, 1000), (1000, 1000), 50)
    assert off.tolist() == [[[30, 30]]]
    p = extract_patches(x_high[:1], off, 50, backend="reference")
    assert torch.equal(p[0, 0], x_high[0, :, 30:80, 30:80])
    # and 31.5 -> 32: half to even, not half down
    off = patch_offsets(samples((56,)), 1000, (1000,), (1000,), 50)
    assert off.tolist() == [[[32]]]


# -- the tasks' worked examples ----------------------------------------------------------


def test_megapixel_mnist():
    off = patch_offsets(samples((0, 0), (179, 179), (0, 179)), (180, 180), (180, 180),
                        (1500, 1500), 50)
    assert off.tolist() == [[[-21, -21], [1471, 1471], [-21, 1471]]]


def test_speed_limits():
    off = patch_offsets(samples((0, 0), (34, 46)), (35, 47), (288, 384), (960, 1280), 100,
                        receptive_field=9)
    assert off.tolist() == [[[-22, -22], [882, 1202]]]


def test_colon_cancer():
    s = torch.arange(100).view(1, 100, 1).expand(1, 100, 2)
    off = patch_offsets(s, (100, 100), (100, 100), (500, 500), 27)
    assert off[0, 0].tolist() == [-11, -11]
    assert off[0, 99].tolist() == [484, 484]
    assert torch.equal(off[0, :, 0], 5 * torch.arange(100) - 11)  # step 5, start 5s - 11


# -- the general form --------------------------------------------------------------------


def test_nested_sampling_with_origin_and_extent():
    """A 4x4 grid over a previous 40x40 patch at (100, 60), same resolution."""
    s = samples((0, 0), (3, 1))
    off = patch_offsets(s, (4, 4), (1000, 1000), (1000, 1000), 6,
                        origin=torch.tensor([[[100.0, 60.0]]]), extent=(40, 40))
    # step 10: start = origin + 10 s + 5 - 3
    assert off.tolist() == [[[102, 62], [132, 72]]]
    # at twice the resolution every length doubles: 2*origin + 20 s + 10 - 3
    off2 = patch_offsets(s, (4, 4), (1000, 1000), (2000, 2000), 6,
                         origin=(100, 60), extent=(40, 40))
    assert off2.tolist() == [[[207, 127], [267, 147]]]


def test_1d_and_3d_and_dtype():
    off = patch_offsets(torch.tensor([[[0], [9]]]), 10, (10,), (100,), 4)
    assert off.dtype == torch.int64 and off.tolist() == [[[3], [93]]]
    off = patch_offsets(torch.tensor([[[1, 0, 2]]]), (2, 1, 4), (8, 8, 8), (16, 32, 8), (4, 8, 2))
    # steps (8, 32, 2): starts 8+4-2, 0+16-4, 4+1-1
    assert off.tolist() == [[[10, 12, 4]]]


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"samples": [[[0, 0]]]}, TypeError, r"samples must be a torch.Tensor"),
        ({"samples": torch.zeros(2, 2, dtype=torch.int64)}, ValueError, r"samples must have shape \(B, N, d\)"),
        ({"samples": torch.zeros(1, 1, 4, dtype=torch.int64)}, ValueError, r"1 to 3 spatial dims, got 4"),
        ({"sample_space": (25,)}, ValueError, r"sample_space must be 2 ints"),
        ({"sample_space": 0}, ValueError, r"sample_space must be >= 1"),
        ({"low_shape": 100}, TypeError, r"low_shape must be 2 ints"),
        ({"high_shape": (1000, 1000.0)}, ValueError, r"high_shape must be 2 ints"),
        ({"patch_size": (50, 0)}, ValueError, r"patch_size must be >= 1"),
        ({"receptive_field": -1}, ValueError, r"receptive_field must be >= 0"),
        ({"receptive_field": 100}, ValueError, r"receptive_field \(100, 100\) must be smaller than low_shape"),
        ({"origin": (1.0, 2.0, 3.0)}, ValueError, r"origin must have a last dim of 2"),
        ({"extent": 5.0}, ValueError, r"extent must have a last dim of 2"),
    ],
)
def test_argument_errors(kwargs, error, match):
    args = dict(samples=samples((1, 1)), sample_space=(25, 25), low_shape=(100, 100),
                high_shape=(1000, 1000), patch_size=50)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        patch_offsets(**args)



# -- rounding at exact ties (docs/geometry.md, "Rounding") ---------------------------------


def _exact_start(s: int, space: int, low: int, high: int, patch: int, origin2: int,
                 extent: int) -> int:
    """The rule, computed independently on exact rationals: round half to even
    of ``origin * scale + (s + 1/2) * step - patch / 2`` (Python's ``round``
    of a Fraction), with ``origin = origin2 / 2``."""
    from fractions import Fraction

    scale = Fraction(high, low)
    step = extent * scale / space
    return round(Fraction(origin2, 2) * scale + s * step + step / 2 - Fraction(patch, 2))


def test_every_cell_of_the_mnist_grid_follows_the_exact_rule():
    """180-grid -> 1500 px, patch 50: start (50 s - 125) / 6, a tie at every
    s = 1 (mod 3); float arithmetic rounded 16 of those 60 the wrong way."""
    grid = torch.stack(torch.meshgrid(torch.arange(180), torch.arange(180), indexing="ij"), -1)
    grid = grid.reshape(1, -1, 2)
    off = patch_offsets(grid, (180, 180), (180, 180), (1500, 1500), 50)
    expected = torch.tensor([_exact_start(s, 180, 180, 1500, 50, 0, 180) for s in range(180)])
    ties = [s for s in range(180) if (50 * s - 125) % 6 == 3]
    assert len(ties) == 60 and ties[:3] == [1, 4, 7]
    # tie cells by hand: -12.5 -> -12, 12.5 -> 12, 37.5 -> 38, 62.5 -> 62
    assert expected[[1, 4, 7, 10]].tolist() == [-12, 12, 38, 62]
    assert torch.equal(off, expected[grid])


@pytest.mark.parametrize("space,low,high,patch,rf", [
    ((35, 47), (288, 384), (960, 1280), (100, 100), 9),  # speed limits (no ties)
    ((100, 100), (100, 100), (500, 500), (27, 27), 0),   # colon cancer (integers)
    ((7, 13), (60, 90), (420, 1000), (20, 33), 5),       # half-integer origin, ties
    ((1000, 1000), (1000, 1000), (1000, 1000), (50, 50), 0),  # every start a tie
])
def test_every_cell_of_other_grids_follows_the_exact_rule(space, low, high, patch, rf):
    for dim in range(2):
        s = torch.zeros((1, space[dim], 2), dtype=torch.int64)
        s[0, :, dim] = torch.arange(space[dim])
        off = patch_offsets(s, space, low, high, patch, receptive_field=rf)[0, :, dim]
        expected = [_exact_start(c, space[dim], low[dim], high[dim], patch[dim], rf,
                                 low[dim] - rf) for c in range(space[dim])]
        assert off.tolist() == expected


def test_nested_sampling_rounds_ties_exactly_and_float_samples_still_work():
    # 3 cells over a previous 25-px patch, scale 3: step 25, every start a tie
    s = torch.tensor([[[0], [1], [2]]])
    origin = torch.tensor([[[10], [11], [13]]])
    off = patch_offsets(s, 3, (100,), (300,), 8, origin=origin, extent=(25,))
    expected = [_exact_start(c, 3, 100, 300, 8, 2 * o, 25) for c, o in enumerate((10, 11, 13))]
    assert off[0, :, 0].tolist() == expected == [38, 66, 98]  # 38.5, 66.5, 97.5
    # the same origin and extent as floats (multiples of 1/2): the same starts
    off_f = patch_offsets(s, 3, (100,), (300,), 8, origin=origin.double(), extent=(25.0,))
    assert torch.equal(off_f, off)
    # sub-cell float samples are computed in float64: 2.5 + 5 - 2 = 5.5 -> 6
    sub = patch_offsets(torch.tensor([[[0.25], [0.3]]]), 10, (10,), (100,), 4)
    assert sub.tolist() == [[[6], [6]]]
