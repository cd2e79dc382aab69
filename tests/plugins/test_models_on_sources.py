"""DPS and IPS on batches of image sources (ats/plugins/models/): the tensor
path's results for images of one size; for images of different sizes, no
padded DPS candidate and no IPS patch past an item's own grid is ever
selected, and every patch is cut from its own image; the errors; and
``ats-run --task images --model dps|ips`` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import ats.plugins.models.dps as dps_module
from ats.cli import run_main
from ats.plugins.models.dps import DPSClassifier
from ats.plugins.models.ips import IPSClassifier
from ats.plugins.networks.small import SmallAttention, SmallFeature
from ats.sources import Framed, SourceBatch, open_source
from tests.sources import writers
from tests.tasks.test_images import make_dataset

IPS_SMALL = {"d_model": 16, "heads": 2, "d_head": 4, "d_inner": 16}


def dps(**kwargs) -> DPSClassifier:
    torch.manual_seed(0)
    options = {"num_classes": 3, "k": 3, "patch_size": 16, "n_samples": 40, **kwargs}
    scorer = options.pop("scorer", None) or SmallAttention()
    return DPSClassifier(scorer, SmallFeature(), **options)


def ips(**kwargs) -> IPSClassifier:
    torch.manual_seed(0)
    options = {"num_classes": 3, "patch_size": 16, "memory": 3, "chunk": 7, **IPS_SMALL,
               **kwargs}
    return IPSClassifier(SmallFeature(), **options)


def crop(x: np.ndarray, offset, patch: int) -> torch.Tensor:
    """The naive patch: x (C, H, W) uint8 at top-left ``offset``, zeros outside,
    scaled to [0, 1] in float32 (as the extractors do: ``float32(v) * float32(1/255)``)."""
    out = np.zeros((x.shape[0], patch, patch), np.float32)
    (y, x0), (H, W) = (int(o) for o in offset), x.shape[1:]
    ys, xs = slice(max(y, 0), min(y + patch, H)), slice(max(x0, 0), min(x0 + patch, W))
    out[:, ys.start - y:ys.stop - y, xs.start - x0:xs.stop - x0] = x[:, ys, xs] * np.float32(1 / 255)
    return torch.from_numpy(out)


# -- images of one size: the tensor path's results ------------------------------------


def one_size(tmp_path):
    g = torch.Generator().manual_seed(1)
    x_high = torch.randint(0, 256, (2, 1, 96, 96), generator=g, dtype=torch.uint8)
    x_low = torch.nn.functional.avg_pool2d(x_high.float() / 255, 8)  # (2, 1, 12, 12)
    np.save(tmp_path / "b.npy", x_high[1].numpy())  # a memory map beside an in-memory array
    return x_low, x_high, [open_source(x_high[0].numpy()), open_source(tmp_path / "b.npy")]


@pytest.mark.parametrize("training", [True, False])
def test_dps_on_sources_of_one_size_gives_the_tensor_results(tmp_path, training):
    x_low, x_high, sources = one_size(tmp_path)
    m = dps(pool=2).train(training)
    outs = []
    for x in (x_high, sources):
        m.zero_grad()
        out = m(x_low, x, generator=torch.Generator().manual_seed(2))
        out.logits.sum().backward()  # the scorer's gradient: through the perturbed top-k
        outs.append((out, [p.grad for p in m.scorer.parameters()]))
    (want, want_grad), (got, got_grad) = outs
    assert torch.equal(got.logits, want.logits)
    assert torch.equal(got.selection.offsets, want.selection.offsets)
    assert torch.equal(got.selection.patches, want.selection.patches)
    assert torch.equal(got.selection.weights, want.selection.weights)
    if training:
        assert all(torch.equal(a, b) for a, b in zip(got_grad, want_grad))
        assert any(float(g.abs().sum()) > 0 for g in got_grad)


@pytest.mark.parametrize("training", [True, False])
def test_ips_on_sources_of_one_size_gives_the_tensor_results(tmp_path, training):
    x_low, x_high, sources = one_size(tmp_path)
    m = ips().train(training)
    outs = []
    for x in (x_high, SourceBatch(sources)):
        torch.manual_seed(5)  # the transformer's dropout
        outs.append(m(x_low, x))
    want, got = outs
    assert torch.equal(got.logits, want.logits)
    assert torch.equal(got.selection.offsets, want.selection.offsets)
    assert torch.equal(got.selection.patches, want.selection.patches)


# -- images of different sizes ---------------------------------------------------------

#: (H, W) and the low view they fill at 1/8; 88 / 8 = 11: DPS's blocks of 2
#: low pixels leave the 6th column of item 0 half in its image, half padding
SIZES, LOWS = ((128, 88), (64, 128)), ((16, 11), (8, 16))


def two_sizes():
    """Two bright grey images of different sizes, low views padded to 16x16."""
    images = [(writers.oracle((1, h, w), "uint8", h) // 2 + 128).astype(np.uint8)
              for h, w in SIZES]
    x_low = torch.zeros(2, 1, 16, 16)
    for b, (x, (h, w)) in enumerate(zip(images, LOWS)):
        x_low[b, :, :h, :w] = torch.from_numpy(x[:, ::8, ::8] / 255.0)
    batch = [Framed(open_source(x), low) for x, low in zip(images, LOWS)]
    return images, x_low, batch


class PrefersPadding(nn.Module):
    """Scores the dark padding highest, so that only the mask keeps DPS off it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)

    def forward(self, x):
        return self.conv(x) - 20.0 * x


def test_dps_never_selects_a_candidate_that_is_not_wholly_in_its_image(monkeypatch):
    images, x_low, batch = two_sizes()
    seen = []

    def spy(scores, k, **kwargs):
        soft = perturbed_topk(scores, k, **kwargs)
        seen.append((scores.detach(), soft.detach()))
        return soft

    perturbed_topk = dps_module.perturbed_topk
    monkeypatch.setattr(dps_module, "perturbed_topk", spy)
    m = dps(scorer=PrefersPadding(), sigma=2.0, n_samples=200)
    # blocks of 2x2 cells of the 16x16 map (a patch of 16 is 2 low pixels):
    # whole when they end inside the item's low view
    whole = torch.stack([(torch.arange(1, 9)[:, None] * 2 <= h) & (torch.arange(1, 9) * 2 <= w)
                         for h, w in LOWS]).flatten(1)
    assert whole.sum(1).tolist() == [8 * 5, 4 * 8]
    g = torch.Generator().manual_seed(3)
    for training in (True, True, True, False):
        out = m.train(training)(x_low, batch, generator=g)
        cells = out.selection.offsets // 16  # candidate (i, j) is centred at 16 (i, j) + 8
        assert torch.all(whole.gather(1, cells[..., 0] * 8 + cells[..., 1]))
        for b, x in enumerate(images):
            for n in range(3):
                assert torch.equal(out.selection.patches[b, n],
                                   crop(x, out.selection.offsets[b, n], 16))
        if training:
            scores, soft = seen[-1]
            assert torch.all(soft[~whole.unsqueeze(1).expand_as(soft)] == 0)  # no perturbation
            assert torch.all(scores[~whole] == float("-inf"))
            kept = scores[whole]  # min-max over each item's whole candidates only
            assert float(kept.min()) == 0.0 and float(kept.max()) == pytest.approx(1.0)
            out.logits.sum().backward()
            assert all(torch.isfinite(p.grad).all() for p in m.scorer.parameters())
    # the scorer wanted the padding: without the mask the top-k would be there
    assert int(m.candidates(x_low, [128, 64], [1.0, 0.5])[0].flatten(1)[1].argmax()) // 8 >= 4


def test_ips_scans_each_item_over_its_own_grid(monkeypatch):
    images, x_low, batch = two_sizes()
    m = ips(memory=4)
    grids = m.item_grids(list(SIZES))
    assert grids.sizes.tolist() == [8 * 5, 4 * 8] and grids.size == 40
    out = m(x_low, batch)
    for b, (x, (H, W)) in enumerate(zip(images, SIZES)):
        off = out.selection.offsets[b]
        assert torch.all(off >= 0) and torch.all(off % 16 == 0)
        assert torch.all(off[:, 0] + 16 <= H) and torch.all(off[:, 1] + 16 <= W)
        for n in range(4):
            assert torch.equal(out.selection.patches[b, n], crop(x, off[n], 16))
    # scores that grow with the grid index: the last positions of the scan are
    # item 1's padding; each item keeps the last M of its own grid, in any chunking
    monkeypatch.setattr(m, "embed", lambda patches, index: index.float().unsqueeze(-1))
    monkeypatch.setattr(m.pool, "score", lambda emb: emb[..., 0])
    sources = SourceBatch([f.source for f in batch])
    for chunk in (1, 6, 40, 100):
        m.chunk = chunk
        index, scores = m.select(sources, grids, x_low)
        assert index.tolist() == [[39, 38, 37, 36], [31, 30, 29, 28]]
        assert torch.isfinite(scores).all()


def test_bad_source_batches_are_refused_naming_the_problem():
    _, x_low, batch = two_sizes()
    with pytest.raises(ValueError, match=r"item 1's low view \(8, 16\) holds 32 whole DPS "
                                         r"candidates of the grid \(8, 8\), fewer than "
                                         r"method.k=33"):
        dps(k=33)(x_low, batch)
    with pytest.raises(ValueError, match=r"item 1's image \(64, 128\) has a grid of 32 IPS "
                                         r"patches .*fewer than method.memory=33"):
        ips(memory=33)(x_low, batch)
    for model in (dps(patch_size=70), ips(patch_size=70)):
        with pytest.raises(ValueError, match=r"patch_size \(70, 70\) is larger than the image "
                                             r"of item 1, \(64, 128\)"):
            model(x_low, batch)
        with pytest.raises(ValueError, match="same batch size, got 1 and 2 sources"):
            model(x_low[:1], batch)
        with pytest.raises(ValueError, match=r"needs x_low as a \(B, C, h, w\) tensor"):
            model(x_low[:, 0], batch)


# -- end to end ------------------------------------------------------------------------


@pytest.mark.parametrize("model, sets", [
    ("dps", ["method.n_samples=50"]),
    ("ips", [f"method.{k}={v}" for k, v in IPS_SMALL.items()] + ["method.chunk=16"]),
])
def test_ats_run_trains_dps_and_ips_on_image_files(tmp_path, monkeypatch, model, sets):
    root = make_dataset(tmp_path / "data", n=8)  # 120x160, 150x100 and 96x200 images
    monkeypatch.chdir(tmp_path)
    args = ["--task", "images", "--model", model, "--data-dir", str(root), "--epochs", "1",
            "--batch-size", "4", "--n-patches", "3", "--patch-size", "24",
            "--output", str(tmp_path / "run"), "--no-progress",
            "--set", "data.low_size=32", "--set", f"data.cache_dir={tmp_path / 'lowviews'}",
            "--set", "pictures=2", "--set", "feature=small_cnn", "--set", "attention=small_cnn"]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(run_main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["model"] == model and summary["final_test_error"] is not None
    assert (tmp_path / "run" / "pictures" / "epoch0001_patches.png").is_file()
