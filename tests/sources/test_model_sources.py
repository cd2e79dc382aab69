"""AttentionSampling on batches of sources: the tensor path's results for
images of one size, and for images of different sizes a padded low view
whose padding is never sampled and per-item geometry in each image's frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ats.core.extract import extract_patches
from ats.core.geometry import patch_offsets
from ats.core.model import AttentionSampling
from ats.sources import Framed, SourceBatch, open_source
from ats.sources.frames import masked_attention_softmax, valid_cells
from tests.sources import writers


class Features(nn.Module):
    out_features = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return nn.functional.normalize(self.conv(x).amax((2, 3)), dim=-1)


def model(n: int = 5, patch: int = 12, smoothing: float = 0.0, sampler: str = "without_replacement"):
    torch.manual_seed(0)
    return AttentionSampling(nn.Conv2d(3, 1, 3, padding=1), Features(), n_patches=n,
                             patch_size=patch, smoothing=smoothing, sampler=sampler)


@pytest.mark.parametrize("smoothing", [0.0, 1e-3])
def test_sources_of_one_size_give_the_tensor_path_results(smoothing, tmp_path):
    x = np.stack([writers.oracle((3, 96, 80), "uint8", s) for s in range(3)])
    writers.write_tiff(tmp_path / "a.tif", x[0], levels=2, tile=32)
    np.save(tmp_path / "b.npy", x[1])
    sources = [open_source(tmp_path / "a.tif"), open_source(tmp_path / "b.npy"), open_source(x[2])]
    x_low = torch.rand(3, 3, 24, 20)
    m = model(smoothing=smoothing)
    want = m(x_low, torch.from_numpy(x), generator=torch.Generator().manual_seed(1))
    got = m(x_low, sources, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(got.attention, want.attention, rtol=1e-6, atol=1e-9)
    assert torch.equal(got.samples, want.samples) and torch.equal(got.offsets, want.offsets)
    assert torch.equal(got.patches, want.patches)
    torch.testing.assert_close(got.features, want.features)


def sized_batch():
    """Three RGB images of different sizes, low views fit in 16x16 (scale 1/8)."""
    images = [writers.oracle((3, h, w), "uint8", h) for h, w in ((128, 96), (64, 128), (128, 128))]
    low_sizes = [(16, 12), (8, 16), (16, 16)]
    x_low = torch.zeros(3, 3, 16, 16)
    for b, (x, (h, w)) in enumerate(zip(images, low_sizes)):
        x_low[b, :, :h, :w] = torch.from_numpy(x[:, ::8, ::8] / 255.0)
    batch = SourceBatch([open_source(x) for x in images], low_sizes)
    return images, low_sizes, x_low, batch


def test_images_of_different_sizes_map_to_their_own_frames():
    images, low_sizes, x_low, batch = sized_batch()
    m = model(n=6)
    out = m(x_low, batch, generator=torch.Generator().manual_seed(2))
    for b, (x, (h, w)) in enumerate(zip(images, low_sizes)):
        a = out.attention[b]
        assert torch.all(a[h:, :] == 0) and torch.all(a[:, w:] == 0)  # padding: no mass
        assert float(a.detach().sum()) == pytest.approx(1.0)
        s = out.samples[b:b + 1]
        assert torch.all(s[..., 0] < h) and torch.all(s[..., 1] < w)
        # the grid has one cell per low pixel: the item's own geometry, unpadded
        own = patch_offsets(s, (h, w), (h, w), x.shape[1:], 12)
        assert torch.equal(out.offsets[b:b + 1], own)
        ref = extract_patches(x[None], own, 12, backend="reference", as_float=True)
        assert torch.equal(out.patches[b:b + 1], ref)
    out.features.sum().backward()
    grads = [p.grad for p in m.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("sampler", ["with_replacement", "without_replacement"])
def test_padding_is_never_sampled(sampler):
    _, low_sizes, x_low, batch = sized_batch()
    m = model(n=8, smoothing=0.01, sampler=sampler)
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        s = m(x_low, batch, generator=g).samples
        for b, (h, w) in enumerate(low_sizes):
            assert int(s[b, :, 0].max()) < h and int(s[b, :, 1].max()) < w


def test_masked_softmax_spreads_the_floor_over_valid_cells_only():
    scores = torch.zeros(2, 1, 2, 3)
    mask = torch.tensor([[[True, True, False], [True, False, False]],
                         [[True] * 3, [True] * 3]])
    a = masked_attention_softmax(scores, mask, smoothing=0.1)
    torch.testing.assert_close(a[0], torch.tensor([[1 / 3, 1 / 3, 0], [1 / 3, 0, 0]]))
    torch.testing.assert_close(a[1], torch.full((2, 3), 1 / 6))
    big = torch.tensor([[[[50.0, 0, 0], [0, 0, 99]]]])  # the largest score is masked out
    a = masked_attention_softmax(big, mask[:1], smoothing=0.1)
    assert float(a[0, 0, 0]) == pytest.approx(0.9 + 0.1 / 3) and float(a[0, 1, 2]) == 0
    # cells whose centre lies in the valid part, with a receptive field of 2
    cells = valid_cells(torch.tensor([[10, 6]]), (4, 4), (10, 10), receptive_field=2)
    assert cells[0].tolist() == [[True, True, False, False]] * 4


def test_more_patches_than_valid_cells_is_refused_without_replacement():
    _, _, x_low, batch = sized_batch()
    with pytest.raises(ValueError, match="covers 128 attention cells, fewer than n_patches=200"):
        model(n=200)(x_low, batch)
    model(n=200, sampler="with_replacement")(x_low, batch)
    with pytest.raises(ValueError, match="larger than the image of item 1"):
        model(patch=70)(x_low, batch)


class _Framed(Dataset):
    def __init__(self, folder):
        self.items = []
        for i, (h, w) in enumerate(((96, 64), (64, 96), (80, 80), (96, 96))):
            x = writers.oracle((3, h, w), "uint8", i)
            writers.write_tiff(folder / f"{i}.tif", x, levels=1, tile=32)
            self.items.append((open_source(folder / f"{i}.tif"), x, (h // 8, w // 8)))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        source, x, (h, w) = self.items[i]
        x_low = torch.zeros(3, 12, 12)
        x_low[:, :h, :w] = torch.from_numpy(x[:, ::8, ::8] / 255.0)
        return {"x_low": x_low, "x_high": Framed(source, (h, w)), "y": i}


def test_batches_from_dataloader_workers_keep_their_sources(tmp_path):
    data = _Framed(tmp_path)
    loader = DataLoader(data, batch_size=2, num_workers=2)
    m = model(n=4)
    for k, batch in enumerate(loader):
        assert isinstance(batch["x_high"], SourceBatch) and batch["y"].tolist() == [2 * k, 2 * k + 1]
        out = m(batch["x_low"], batch["x_high"], generator=torch.Generator().manual_seed(k))
        for j in range(2):
            _, x, _ = data.items[2 * k + j]
            ref = extract_patches(x[None], out.offsets[j:j + 1], 12, backend="reference",
                                  as_float=True)
            assert torch.equal(out.patches[j:j + 1], ref)
