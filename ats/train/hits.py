"""Did the model look at the right places? Hits of the patches it read on
the objects the label depends on.

A task whose data knows where those objects are (Megapixel MNIST's digits,
find_pattern's texture) puts their boxes in each item as ``"boxes"``: an
int64 ``(K, 4)`` tensor of ``(top, left, bottom, right)`` in ``x_high``
pixels, bottom and right exclusive. A patch *hits* when it holds at least
half of some box's area. Evaluation reports the fraction of patches read
that hit (``test_hit_rate``): the number that tells whether a model that is
not learning fails to find the objects or fails to recognise them
(docs/training.md, "Evaluation").
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["HIT_FRACTION", "box_coverage", "patch_hits", "read_patches_of"]

#: a patch hits a box when it holds at least this fraction of the box's area
HIT_FRACTION = 0.5


def box_coverage(offsets: Tensor, patch_size: tuple[int, int], boxes: Tensor) -> Tensor:
    """(B, N, K) the fraction of each box's area inside each patch.

    Args:
        offsets: (B, N, 2) top-left corners of the patches, in x_high pixels.
        patch_size: (ph, pw).
        boxes: (B, K, 4) (top, left, bottom, right), bottom/right exclusive.
    """
    if offsets.ndim != 3 or offsets.shape[-1] != 2:
        raise ValueError(f"offsets must be (B, N, 2), got {tuple(offsets.shape)}")
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != offsets.shape[0]:
        raise ValueError(f"boxes must be (B, K, 4) with B={offsets.shape[0]}, got "
                         f"{tuple(boxes.shape)}")
    off = offsets.to(torch.int64).unsqueeze(2)  # (B, N, 1, 2)
    box = boxes.to(device=offsets.device, dtype=torch.int64).unsqueeze(1)  # (B, 1, K, 4)
    size = torch.tensor(patch_size, device=offsets.device, dtype=torch.int64)
    top = torch.maximum(off[..., 0], box[..., 0])
    left = torch.maximum(off[..., 1], box[..., 1])
    bottom = torch.minimum(off[..., 0] + size[0], box[..., 2])
    right = torch.minimum(off[..., 1] + size[1], box[..., 3])
    inside = (bottom - top).clamp(min=0) * (right - left).clamp(min=0)
    area = ((box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1])).clamp(min=1)
    return inside.double() / area.double()


def patch_hits(offsets: Tensor, patch_size: tuple[int, int], boxes: Tensor) -> Tensor:
    """(B, N) bool: the patch holds at least :data:`HIT_FRACTION` of some box."""
    coverage = box_coverage(offsets, patch_size, boxes)
    if coverage.shape[-1] == 0:
        return torch.zeros(coverage.shape[:2], dtype=torch.bool, device=coverage.device)
    return coverage.amax(-1) >= HIT_FRACTION


def read_patches_of(out: Any) -> tuple[Tensor, tuple[int, int]] | None:
    """The offsets (B, N, 2) and patch size of the patches a model output
    says it read (ATS's samples, DPS's and IPS's selections); None for a
    model that reads no patches (the CNN baselines) or a 3-d image."""
    record = getattr(out, "ats", None) or getattr(out, "selection", None)
    if record is None or record.offsets.ndim != 3 or record.offsets.shape[-1] != 2:
        return None
    return record.offsets, tuple(int(s) for s in record.patches.shape[-2:])
