"""Iterative patch selection (ats/core/patch_grid.py, ats/plugins/models/ips.py;
docs/methods.md, "IPS"): the scan keeps the top M of one full pass for any
chunk size, and its memory does not grow with the number of patches."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ats.core.extract import get_extractor
from ats.core.patch_grid import PatchGrid, iterative_top_m
from ats.plugins.models.ips import IPSClassifier
from ats.plugins.networks.small import SmallFeature


def test_the_grid_numbers_patches_row_major_and_stays_inside():
    grid = PatchGrid((10, 13), (4, 4), (3, 4))
    assert grid.counts == (3, 3) and grid.size == 9
    offsets = grid.offsets(torch.arange(grid.size))
    assert offsets.tolist() == [[r, c] for r in (0, 3, 6) for c in (0, 4, 8)]
    with pytest.raises(ValueError, match=r"patch \(11, 4\) is larger than the image \(10, 13\)"):
        PatchGrid((10, 13), (11, 4), (1, 1))


@pytest.mark.parametrize("m", [1, 3, 7, 37, 50])
def test_iterative_selection_is_the_top_m_of_one_pass_for_any_chunk(m):
    n = 37
    scores = torch.randn(3, n, generator=torch.Generator().manual_seed(m))
    full = torch.topk(scores, min(m, n), dim=1)
    for chunk in range(1, n + 2):
        asked = []

        def score(start, stop):
            asked.append(stop - start)
            return scores[:, start:stop]

        index, best = iterative_top_m(score, n, m, chunk)
        assert torch.equal(index, full.indices) and torch.equal(best, full.values), chunk
        assert max(asked) <= chunk and sum(asked) == n  # every patch scored once


class _SpyExtractor:
    """The torch extractor, recording how many patches each call reads."""

    def __init__(self):
        self.inner = get_extractor("torch")
        self.counts = []

    def __call__(self, x, offsets, patch, **kwargs):
        self.counts.append(int(offsets.shape[0] * offsets.shape[1]))
        return self.inner(x, offsets, patch, **kwargs)


class _LargestTensor(TorchDispatchMode):
    """The largest memory block (bytes of a tensor's storage) that any operation
    creates while active; views of the inputs (``existing`` storages) are not
    new memory."""

    def __init__(self, *existing: torch.Tensor):
        super().__init__()
        self.existing = {t.untyped_storage().data_ptr() for t in existing}
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if storage.data_ptr() not in self.existing:
                    self.largest = max(self.largest, storage.nbytes())
        return out


def _ips(memory=3, chunk=5):
    torch.manual_seed(0)
    model = IPSClassifier(SmallFeature(), num_classes=4, patch_size=8, memory=memory,
                          chunk=chunk, d_model=16, heads=2, d_head=4, d_inner=16)
    spy = _SpyExtractor()
    model.extractor = spy
    return model, spy


def _step(model, side, batch=2):
    """Largest tensor created by one training step (forward + backward) on images
    of ``side``² pixels (side / 8)² patches."""
    g = torch.Generator().manual_seed(side)
    x_low = torch.rand(batch, 1, 4, 4, generator=g)
    x_high = torch.randint(0, 256, (batch, 1, side, side), generator=g, dtype=torch.uint8)
    with _LargestTensor(x_low, x_high) as probe:
        model(x_low, x_high).logits.sum().backward()
    return probe.largest


def test_the_scan_memory_does_not_grow_with_the_number_of_patches():
    model, spy = _ips(memory=3, chunk=12)
    sizes = {side: _step(model, side) for side in (48, 96, 144)}  # 36 to 324 patches
    assert len(set(sizes.values())) == 1, sizes
    assert max(spy.counts) <= 2 * 12  # B * I patches read at once, never more
    # the measure can fail: a chunk of every patch makes the largest tensor grow
    whole, _ = _ips(memory=3, chunk=10_000)
    grown = [_step(whole, side) for side in (48, 96)]
    assert grown[1] > 3 * grown[0]


def test_the_model_keeps_the_same_patches_for_any_chunk_size():
    g = torch.Generator().manual_seed(5)
    x_high = torch.randint(0, 256, (2, 1, 56, 56), generator=g, dtype=torch.uint8)
    like = torch.zeros(2, 1, 4, 4)
    chosen = []
    for chunk in (1, 7, 30, 49, 200):
        model, _ = _ips(memory=4, chunk=chunk)
        model.train()  # the scan itself runs in evaluation mode (no dropout)
        index, _ = model.select(x_high, model.grid((56, 56)), like)
        chosen.append(index)
        assert model.training and model.pool.training  # the modes are restored
    assert all(torch.equal(c, chosen[0]) for c in chosen)


def test_an_image_with_fewer_grid_patches_than_m_is_refused_not_cut_to_fewer():
    model, _ = _ips(memory=10)
    x_low, x_high = torch.rand(2, 1, 2, 2), torch.zeros(2, 1, 24, 24, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"grid of 9 IPS patches .*fewer than method.memory=10"):
        model(x_low, x_high)  # a 3 x 3 grid
    with pytest.raises(ValueError, match="fewer than method.memory=10"):
        model.check_input_shapes((1, 2, 2), (1, 24, 24))  # caught before training
    assert model.grid((32, 32)).size == 16  # 16 >= 10: accepted
