"""The ``dps`` model: differentiable patch selection (Cordonnier et al., CVPR 2021).

A scorer (the task's attention network) scores the low view; its map is
averaged into candidate cells of about one patch each; a perturbed top-k
(:mod:`ats.core.perturbed_topk`) selects k of them with gradients through
the selection; the feature network sees the k full-resolution patches, read
through the same extractors as ATS; the head reads the mean of the k slot
features. docs/methods.md, "DPS", has the mathematics and where this
differs from the paper (only the k patches of the hard top-k are read).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ats.classifier import Classifier, ModelOutput, Selection, linear_head
from ats.config import RunConfig, setting
from ats.core.extract import get_extractor
from ats.core.geometry import as_patch_size, patch_offsets
from ats.core.perturbed_topk import hard_topk_indicators, perturbed_topk, topk_indices
from ats.models import ModelPlugin
from ats.plugins.models.common import (
    check_source_inputs,
    check_tensor_inputs,
    is_source_input,
    read_patches,
)
from ats.registry import model
from ats.sources import frames

__all__ = ["DPSClassifier", "DPSModel", "DPSOptions"]


@dataclasses.dataclass(frozen=True)
class DPSOptions:
    """The options of ``dps`` (``--set method.NAME=VALUE``); defaults after
    Cordonnier et al. (CVPR 2021): σ = 0.05 decaying, 500 perturbations."""

    k: int | None = setting(None, ge=1, doc="patches selected; none: n_patches")
    sigma: float = setting(0.05, gt=0, doc="noise scale σ of the perturbed top-k")
    sigma_decay: Literal["none", "linear"] = setting(
        "linear", doc="linear: σ·(1 − (epoch−1)/epochs), at least σ/epochs")
    n_samples: int = setting(500, ge=1, doc="Gaussian perturbations averaged per step")
    pool: int | None = setting(None, ge=1, doc="score-map cells averaged into one candidate, "
                                               "per dim; none: about one patch per candidate")
    normalize: bool = setting(True, doc="min-max the candidates' scores to [0, 1] per image, "
                                        "so that σ is a fraction of their range")


class DPSClassifier(Classifier):
    """Differentiable patch selection with a linear head on the mean slot feature.

    Args:
        scorer: x_low (B, C, *low) -> scores (B, 1, *space) or (B, *space).
        feature: patches (B*k, C, *patch) -> (B*k, D).
        num_classes, k, patch_size, receptive_field: as named.
        sigma, sigma_decay, epochs, n_samples, pool, normalize: see :class:`DPSOptions`.
        extractor: a registered extractor name or instance.

    Training draws ``n_samples`` perturbations (``generator``); evaluation and
    ``deterministic=True`` take the hard top-k, so it is not ``stochastic``.
    """

    stochastic = False

    def __init__(self, scorer: nn.Module, feature: nn.Module, *, num_classes: int, k: int,
                 patch_size: int | Sequence[int], receptive_field: int = 0, sigma: float = 0.05,
                 sigma_decay: str = "linear", epochs: int = 1, n_samples: int = 500,
                 pool: int | None = None, normalize: bool = True, extractor: Any = "auto",
                 head_gain: float = 1.0) -> None:
        super().__init__()
        self.scorer, self.feature = scorer, feature
        self.head = linear_head(feature.out_features, num_classes, head_gain)
        self.k, self.patch_size, self.receptive_field = k, patch_size, receptive_field
        self.sigma, self.sigma_decay, self.epochs = sigma, sigma_decay, epochs
        self.n_samples, self.pool, self.normalize = n_samples, pool, normalize
        self.extractor = get_extractor(extractor)
        self.current_sigma = sigma

    def set_epoch(self, epoch: int) -> None:
        """σ of this (1-based) epoch; the engine calls it before each training epoch."""
        if self.sigma_decay == "linear":
            self.current_sigma = self.sigma * max(1.0 - (epoch - 1) / self.epochs,
                                                  1.0 / self.epochs)

    def pool_factor(self, space: Sequence[int], high: Sequence[int],
                    shown: Sequence[float] | None = None) -> int:
        """Score-map cells per candidate (per dim): ``pool``, or about one patch.

        ``shown``: per item, the fraction of the (padded) low view's first dim
        that shows its image of ``high[b]`` rows (a batch of sources); then one
        factor for the batch, the finest of its items', so that no item's
        candidates are coarser than its patch."""
        if self.pool is not None:
            return self.pool
        patch = as_patch_size(self.patch_size, len(high) if shown is None else 2)
        if shown is None:
            return max(1, round(patch[0] * space[0] / high[0]))
        return max(1, min(round(patch[0] * space[0] * f / h) for f, h in zip(shown, high)))

    def candidates(self, x_low: Tensor, high: Sequence[int],
                   shown: Sequence[float] | None = None) -> tuple[Tensor, list[float]]:
        """(B, *cells) the scorer's map averaged over ``pool_factor`` cells, and the
        extent of x_low (low pixels, per dim) the whole candidates cover: a
        remainder of the map too small for a candidate is left out."""
        raw = self.scorer(x_low)
        if raw.ndim == x_low.ndim:
            raw = raw.squeeze(1)
        space = raw.shape[1:]
        p = self.pool_factor(space, high, shown)
        if p > min(space):
            raise ValueError(f"method.pool={p} is larger than the score map {tuple(space)}")
        if p > 1:
            raw = getattr(F, f"avg_pool{raw.ndim - 1}d")(raw.unsqueeze(1), p, p).squeeze(1)
        extent = [(low - self.receptive_field) * c * p / s
                  for low, c, s in zip(x_low.shape[2:], raw.shape[1:], space)]
        return raw, extent

    def forward(self, x_low: Tensor, x_high: Tensor | np.ndarray | Sequence, *,
                generator: torch.Generator | None = None, deterministic: bool = False
                ) -> ModelOutput:
        """``x_high``: (B, C, *high) images, or a batch of 2-D image sources
        (:class:`ats.sources.SourceBatch`) of their own sizes whose low views
        fill the top-left ``low_sizes[b]`` of ``x_low``: then a candidate not
        wholly inside an item's low view is never selected, and each item's
        patches are cut from its own frame (docs/methods.md, "DPS")."""
        batch = None
        if is_source_input(x_high):
            patch = as_patch_size(self.patch_size, 2)
            batch = x_high = check_source_inputs("dps", x_low, x_high, patch)
            low_sizes, high_sizes = batch.low_sizes_for(x_low), batch.high_sizes
            shown = (low_sizes[:, 0] / x_low.shape[2]).tolist()
            cells, extent = self.candidates(x_low, high_sizes[:, 0].tolist(), shown)
        else:
            check_tensor_inputs("dps", x_low, x_high)
            high = tuple(x_high.shape[2:])
            patch = as_patch_size(self.patch_size, len(high))
            cells, extent = self.candidates(x_low, high)
        space = tuple(cells.shape[1:])
        flat = cells.flatten(1)
        valid = None if batch is None else self._whole(low_sizes, space, extent)
        if self.normalize:
            flat = _min_max(flat, valid)
        if valid is not None:  # never selected: not by the top-k, nor by any perturbation
            flat = flat.masked_fill(~valid.to(flat.device), float("-inf"))
        idx = topk_indices(flat.detach(), self.k)  # (B, k) the cells read, by index
        if self.training and not deterministic:
            soft = perturbed_topk(flat, self.k, sigma=self.current_sigma,
                                  n_samples=self.n_samples, generator=generator)
        else:
            soft = hard_topk_indicators(flat.detach(), self.k)
        # weights[b, j, m]: slot j's indicator mass on the m-th cell read
        weights = soft.gather(2, idx.unsqueeze(1).expand(-1, self.k, -1))
        samples = torch.stack(torch.unravel_index(idx, space), dim=-1)
        if batch is None:
            offsets = patch_offsets(samples, space, tuple(x_low.shape[2:]), high, patch,
                                    self.receptive_field, extent=extent)
        else:  # each item's cells map to its own full-resolution frame
            dev = samples.device
            offsets = frames.item_offsets(samples, space, tuple(x_low.shape[2:]),
                                          low_sizes.to(dev), high_sizes.to(dev), patch,
                                          self.receptive_field, extent=extent)
        patches = read_patches(self.extractor, x_high, offsets, patch, x_low)
        b = x_low.shape[0]
        features = self.feature(patches.flatten(0, 1)).view(b, self.k, -1)
        slots = weights @ features  # (B, k, D)
        selection = Selection(offsets, patches, weights.detach().sum(1), cells.detach())
        return ModelOutput(self.head(slots.mean(1)), selection=selection)

    def _whole(self, low_sizes: Tensor, space: Sequence[int], extent: Sequence[float]) -> Tensor:
        """(B, K) the candidates wholly inside each item's low view; at least k per item."""
        valid = frames.whole_cells(low_sizes, space, extent, self.receptive_field).flatten(1)
        counts = valid.sum(1)
        if bool((counts < self.k).any()):
            b = int(counts.argmin())
            raise ValueError(f"item {b}'s low view {tuple(low_sizes[b].tolist())} holds "
                             f"{int(counts[b])} whole DPS candidates of the grid {tuple(space)}, "
                             f"fewer than method.k={self.k}; lower method.k or method.pool, or "
                             "enlarge the low views")
        return valid

    def check_input_shapes(self, low: Sequence[int], high: Sequence[int]) -> None:
        """k must fit the candidates and a patch the image: a dry run of the scorer."""
        device = next(self.parameters()).device
        with torch.no_grad():
            cells, _ = self.candidates(torch.zeros((1, *low), device=device), high[1:])
        positions = math.prod(cells.shape[1:])
        if positions < self.k:
            raise ValueError(f"method.k={self.k} is larger than the {positions} DPS candidates "
                             f"{tuple(cells.shape[1:])}; lower method.k or method.pool")
        patch = as_patch_size(self.patch_size, len(high) - 1)
        if any(p > h for p, h in zip(patch, high[1:])):
            raise ValueError(f"patch_size {self.patch_size} does not fit the high-resolution "
                             f"image {tuple(high[1:])}")


def _min_max(flat: Tensor, valid: Tensor | None) -> Tensor:
    """(B, K) scores min-max normalised to [0, 1] per item, over its ``valid``
    candidates only (all of them when None); the others are left to mask."""
    if valid is None:
        low, top = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    else:
        valid = valid.to(flat.device)
        low = torch.where(valid, flat, float("inf")).amin(1, keepdim=True)
        top = torch.where(valid, flat, float("-inf")).amax(1, keepdim=True)
    return (flat - low) / (top - low + 1e-8)


@model.register("dps")
class DPSModel(ModelPlugin):
    """Differentiable patch selection (Cordonnier et al., CVPR 2021): a perturbed
    top-k of scores on the low view, gradients through the selection."""

    options = DPSOptions

    def build(self, task: Any, config: RunConfig, options: DPSOptions) -> Classifier:
        return DPSClassifier(
            task.attention_network(config), task.feature_network(config),
            num_classes=task.num_classes, k=options.k or config.n_patches,
            patch_size=config.patch_size, receptive_field=config.receptive_field,
            sigma=options.sigma, sigma_decay=options.sigma_decay, epochs=config.epochs,
            n_samples=options.n_samples, pool=options.pool, normalize=options.normalize,
            extractor=config.extractor, head_gain=config.head_gain)
