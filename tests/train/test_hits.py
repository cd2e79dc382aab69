"""Hits of the patches a model reads on the boxes of the objects that make the label."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ats.classifier import ModelOutput, Selection
from ats.train.evaluation import evaluate_model
from ats.train.hits import box_coverage, patch_hits
from tasks.find_pattern.data import PATTERNS, FindPatternDataset
from tasks.mega_mnist.data import MegapixelMNIST
from tests.train.helpers import make_trainer


@pytest.mark.parametrize("offset, coverage", [
    ((10, 20), 1.0),     # the 50x50 patch holds the whole 28x28 box
    ((24, 20), 0.5),     # it starts half-way down the box: half its rows
    ((24, 34), 0.25),    # half the rows and half the columns
    ((38, 20), 0.0),     # it starts where the box ends (bottom exclusive)
    ((-40, -40), 0.0),   # far outside
])
def test_coverage_of_a_box_by_a_patch(offset, coverage):
    box = torch.tensor([[[10, 20, 38, 48]]])
    got = box_coverage(torch.tensor([[offset]]), (50, 50), box)
    assert got.shape == (1, 1, 1) and float(got) == pytest.approx(coverage)
    assert bool(patch_hits(torch.tensor([[offset]]), (50, 50), box)) == (coverage >= 0.5)


def test_a_patch_hits_when_it_holds_half_of_any_box():
    boxes = torch.tensor([[[0, 0, 10, 10], [100, 100, 110, 110]]])
    offsets = torch.tensor([[[0, 5], [95, 95], [50, 50]]])  # half of box 0, all of box 1, none
    assert patch_hits(offsets, (20, 20), boxes).tolist() == [[True, True, False]]


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="offsets must be"):
        box_coverage(torch.zeros(2, 2), (5, 5), torch.zeros(2, 1, 4))
    with pytest.raises(ValueError, match="boxes must be"):
        box_coverage(torch.zeros(2, 3, 2), (5, 5), torch.zeros(3, 1, 4))


def test_mega_mnist_boxes_are_where_the_digits_are_drawn():
    digits = np.full((20, 28, 28), 255, np.uint8)  # solid digits: every box pixel is lit
    labels = np.arange(20) % 10
    data = MegapixelMNIST(digits, labels, n_samples=3, width=200, height=200, scale=0.2,
                          noise=False)
    for i in range(3):
        item = data[i]
        drawn = item["x_high"][0] > 0
        mask = torch.zeros_like(drawn)
        for top, left, bottom, right in item["boxes"].tolist():
            mask[top:bottom, left:right] = True
        assert item["boxes"].shape == (5, 4) and torch.equal(drawn, mask)


def test_find_pattern_box_holds_the_texture():
    data = FindPatternDataset(4, size=64, cell=8, noise=0.3)
    for i in range(4):
        item = data[i]
        top, left, bottom, right = item["boxes"][0].tolist()
        inside = item["x_high"][0, top:bottom, left:right].numpy()
        pattern = PATTERNS[int(item["y"])] > 0
        assert (inside[pattern] == 255).all()  # the texture's pixels are 1, over noise <= 0.3


class _LooksAt(torch.nn.Module):
    """A model that reads one 8x8 patch at a fixed place (or on the box)."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x_low, x_high, **_):
        b = x_low.shape[0]
        off = self.boxes[:, :, :2] if self.where == "box" else torch.zeros(b, 1, 2, dtype=torch.int64)
        return ModelOutput(torch.zeros(b, 4) + self.w,
                           selection=Selection(off, torch.zeros(b, 1, 1, 8, 8), torch.ones(b, 1)))


@pytest.mark.parametrize("where, rate", [("box", 1.0), ("corner", None)])
def test_evaluation_reports_the_hit_rate(where, rate):
    data = FindPatternDataset(6, size=64, cell=8)
    batch = torch.utils.data.default_collate([data[i] for i in range(6)])
    model = _LooksAt(where)
    model.boxes = batch["boxes"]
    result = evaluate_model(model, [batch], device=torch.device("cpu"),
                            generator=torch.Generator(), seeds=[0, 1])
    corner_hits = float((batch["boxes"][:, 0, :2] == 0).all(1).double().mean())
    assert result["test_hit_rate"] == pytest.approx(rate if rate is not None else corner_hits)


def test_a_run_records_the_hit_rate_per_evaluation(tmp_path):
    trainer = make_trainer(tmp_path / "run", epochs=1)
    trainer.fit()
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header, values = rows[0].split(","), rows[1].split(",")
    rate = float(values[header.index("test_hit_rate")])
    assert 0.0 <= rate <= 1.0
