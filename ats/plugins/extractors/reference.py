"""The ``reference`` extractor: the obvious loop over patches.

It is the test oracle and the benchmark's baseline, so it favours being
obviously correct over being fast: for every (b, n) it clips the patch's
box to the image, and copies that slice into a zero-filled output.
"""

from __future__ import annotations

import torch

from ats.core.extract import Array, Extractor, as_torch, to_float
from ats.registry import extractor


@extractor.register("reference")
class ReferenceExtractor(Extractor):
    """Python loop over the ``B * N`` patches; any device, 1-3 spatial dims."""

    name = "reference"

    def extract(
        self,
        x: Array,
        offsets: torch.Tensor,
        patch_size: tuple[int, ...],
        as_float: bool,
    ) -> torch.Tensor:
        x = as_torch(x).detach()
        B, N, _ = offsets.shape
        C, sizes = x.shape[1], x.shape[2:]
        out = torch.zeros((B, N, C, *patch_size), dtype=x.dtype, device=x.device)
        starts = offsets.cpu().tolist()
        for b in range(B):
            for n in range(N):
                start = starts[b][n]
                # The part of the patch inside the image, in image and in
                # patch coordinates.
                lo = [max(o, 0) for o in start]
                hi = [min(o + p, s) for o, p, s in zip(start, patch_size, sizes)]
                if any(h <= l for l, h in zip(lo, hi)):
                    continue  # entirely outside: stays zero
                src = tuple(slice(l, h) for l, h in zip(lo, hi))
                dst = tuple(slice(l - o, h - o) for l, h, o in zip(lo, hi, start))
                out[(b, n, slice(None)) + dst] = x[(b, slice(None)) + src]
        return to_float(out) if as_float else out
