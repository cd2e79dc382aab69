"""The geometry of a batch of images of different sizes (docs/sources.md,
"Images of different sizes").

Every item's low view is resized with its aspect kept and padded at the
bottom and right to one batch shape ``(h, w)``; item b's image fills the
top-left ``(h_b, w_b)`` of it. The attention grid tiles the whole padded view
as for a tensor batch, so:

* a cell whose centre lies in the padding shows no image: it gets no
  probability (:func:`valid_cells`, :func:`masked_attention_softmax`);
* a cell of item b maps to b's own full-resolution frame through b's own
  scale ``H_b / h_b``: the offsets are :func:`ats.core.geometry.patch_offsets`
  with per-item ``low_shape = (h_b, w_b)`` and ``high_shape = (H_b, W_b)``,
  over the extent of the padded view (:func:`item_offsets`);
* DPS's candidates, blocks of cells, are those wholly inside the item's
  low view (:func:`whole_cells`).

With every ``(h_b, w_b) = (h, w)`` all of this is the tensor batch's geometry.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ats.core.geometry import patch_offsets

__all__ = ["valid_cells", "whole_cells", "masked_attention_softmax", "item_offsets"]


def valid_cells(low_sizes: Tensor, space: Sequence[int], low_shape: Sequence[int],
                receptive_field: int = 0) -> Tensor:
    """Which grid cells show item b's image: (B, *space) bool.

    A cell is valid when its centre, in low pixels, lies inside the item's
    ``low_sizes[b]`` (the grid starts at ``rf / 2`` and spans
    ``low_shape - rf``, as in :func:`~ats.core.geometry.patch_offsets`).

    Args:
        low_sizes: (B, d) integers, the valid part of each item's low view.
        space: the attention grid's shape, d ints.
        low_shape: the padded low view's spatial shape, d ints.
        receptive_field: of the attention network, in low pixels.
    """
    B, d = low_sizes.shape
    masks = []
    for i in range(d):
        cells = torch.arange(space[i], dtype=torch.float64, device=low_sizes.device)
        centre = receptive_field / 2 + (cells + 0.5) * (low_shape[i] - receptive_field) / space[i]
        masks.append(centre[None, :] < low_sizes[:, i:i + 1].to(torch.float64))  # (B, S_i)
    mask = masks[0].view(B, -1, *([1] * (d - 1)))
    for i in range(1, d):
        shape = [B] + [1] * d
        shape[i + 1] = space[i]
        mask = mask & masks[i].view(shape)
    return mask


def whole_cells(low_sizes: Tensor, counts: Sequence[int], extent: Sequence[float],
                receptive_field: int = 0) -> Tensor:
    """Which cells of a grid lie wholly inside item b's image: (B, *counts) bool.

    The grid has ``counts`` cells per dim over ``extent`` low pixels starting
    at ``receptive_field / 2`` (DPS's candidates: blocks of the score map,
    which may leave a remainder of the map out); cell ``i`` ends at
    ``rf / 2 + (i + 1) extent / counts``, and is whole when that end is at
    most ``low_sizes[b]`` (padding is at the bottom and right only).

    Args:
        low_sizes: (B, d) integers, the valid part of each item's low view.
        counts: the grid's shape, d ints.
        extent: the region the grid covers, d low-pixel lengths.
        receptive_field: of the scoring network, in low pixels.
    """
    B, d = low_sizes.shape
    mask = torch.ones((B, *counts), dtype=torch.bool, device=low_sizes.device)
    for i in range(d):
        cells = torch.arange(1, counts[i] + 1, dtype=torch.float64, device=low_sizes.device)
        end = receptive_field / 2 + cells * (float(extent[i]) / counts[i])
        # a tolerance for the float division: the ends are rationals, the sizes integers
        inside = end[None, :] <= low_sizes[:, i:i + 1].to(torch.float64) + 1e-9  # (B, S_i)
        shape = [B] + [1] * d
        shape[i + 1] = counts[i]
        mask = mask & inside.view(shape)
    return mask


def masked_attention_softmax(scores: Tensor, mask: Tensor, smoothing: float = 0.0) -> Tensor:
    """:func:`ats.core.distribution.attention_softmax` over the valid cells only.

    ``a = (1 - s) * softmax(scores | valid) + s / K_b`` on item b's ``K_b``
    valid cells and exactly 0 on the others, so padding is never sampled
    (a zero has ``log a = -inf`` for the Gumbel top-k and no mass for the
    multinomial; docs/method.md, "Attention distribution").

    Args:
        scores: (B, *space) or (B, 1, *space).
        mask: (B, *space) bool, at least one True per item.
        smoothing: ``s`` in [0, 1).
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
    if scores.ndim >= 3 and scores.shape[1] == 1:
        scores = scores.squeeze(1)
    if tuple(mask.shape) != tuple(scores.shape):
        raise ValueError(f"mask {tuple(mask.shape)} does not match the scores "
                         f"{tuple(scores.shape)}")
    B = scores.shape[0]
    flat_mask = mask.reshape(B, -1)
    counts = flat_mask.sum(1, keepdim=True)
    if bool((counts == 0).any()):
        raise ValueError("an item has no valid attention cell (its low view is empty)")
    flat = scores.reshape(B, -1).masked_fill(~flat_mask, float("-inf")).softmax(1)
    if smoothing > 0:
        flat = (1.0 - smoothing) * flat + smoothing * flat_mask.to(flat.dtype) / counts
    return flat.reshape(scores.shape)


def item_offsets(samples: Tensor, space: Sequence[int], low_shape: Sequence[int],
                 low_sizes: Tensor, high_sizes: Tensor, patch_size: Sequence[int],
                 receptive_field: int = 0, extent: Sequence[float] | None = None) -> Tensor:
    """Top-left patch corners (B, N, d) in each item's own full-resolution pixels.

    Args:
        samples: (B, N, d) sampled cells of the grid over the padded low view.
        low_shape: the padded low view's spatial shape (the grid's extent).
        low_sizes: (B, d) the part of the low view that shows each image.
        high_sizes: (B, d) each image's full-resolution shape.
        extent: the low pixels the grid covers, per dim; default
            ``low_shape - receptive_field`` (DPS's candidate blocks may cover less).
    """
    rf = receptive_field
    # a list: integers stay int64, reals float64 (patch_offsets' exact rounding)
    extent = [lo - rf for lo in low_shape] if extent is None else [float(e) for e in extent]
    return patch_offsets(samples, sample_space=tuple(space), low_shape=low_sizes,
                         high_shape=high_sizes, patch_size=tuple(patch_size),
                         receptive_field=rf, origin=[rf / 2] * len(low_shape), extent=extent)
