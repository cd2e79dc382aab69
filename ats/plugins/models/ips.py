"""The ``ips`` model: iterative patch selection (Bergner et al., ICLR 2023).

Every patch of a grid (``patch_size``, ``method.stride``) over the
full-resolution image is embedded and scored without gradients, I patches
at a time (read through the extraction backends: the scan is a gather of a
patch grid), keeping the M best (:func:`ats.core.patch_grid.iterative_top_m`);
then the M patches are embedded again with gradients and a cross-attention
transformer pools them for the head. docs/methods.md, "IPS".
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ats.classifier import Classifier, ModelOutput, Selection, linear_head
from ats.config import RunConfig, setting
from ats.core.extract import get_extractor
from ats.core.geometry import as_patch_size
from ats.core.patch_grid import ItemGrids, PatchGrid, iterative_top_m
from ats.models import ModelPlugin
from ats.plugins.models.common import (
    check_source_inputs,
    check_tensor_inputs,
    is_source_input,
    read_patches,
)
from ats.plugins.models.cross_attention import CrossAttentionPool
from ats.registry import model

__all__ = ["IPSClassifier", "IPSModel", "IPSOptions", "position_encoding"]


@dataclasses.dataclass(frozen=True)
class IPSOptions:
    """The options of ``ips`` (``--set method.NAME=VALUE``); defaults from the
    Megapixel MNIST configuration of Bergner et al. (ICLR 2023)."""

    memory: int = setting(5, ge=1, doc="M, patches kept (the memory buffer)")
    chunk: int = setting(100, ge=1, doc="I, patches scored per iteration")
    stride: int | None = setting(None, ge=1, doc="grid stride in pixels; none: patch_size")
    d_model: int = setting(128, ge=1, doc="D, embedding size of the transformer")
    heads: int = setting(8, ge=1, doc="H, attention heads")
    d_head: int = setting(16, ge=1, doc="query/key/value size per head")
    d_inner: int = setting(512, ge=1, doc="hidden size of the transformer's MLP")
    dropout: float = setting(0.1, ge=0, lt=1, doc="dropout of the transformer")
    attn_dropout: float = setting(0.1, ge=0, lt=1, doc="dropout of its attention weights")
    positional: bool = setting(True, doc="add a sinusoidal encoding of the grid index")


def position_encoding(index: Tensor, dim: int) -> Tensor:
    """(...) int grid indices -> (..., dim) sinusoidal encodings (Vaswani et al.),
    computed per index so that no table of all positions is held."""
    half = torch.arange(0, dim, 2, device=index.device, dtype=torch.float32)
    angle = index.unsqueeze(-1).float() / (10000.0 ** (half / dim))
    out = torch.zeros((*index.shape, dim), device=index.device)
    out[..., 0::2] = torch.sin(angle)
    out[..., 1::2] = torch.cos(angle[..., : dim // 2])
    return out


class IPSClassifier(Classifier):
    """Iterative patch selection, a cross-attention transformer and a linear head.

    Args:
        feature: patches (B*n, C, *patch) -> (B*n, D_f), the task's feature network.
        num_classes: outputs of the head.
        patch_size: grid patches, in full-resolution pixels.
        memory, chunk, stride, d_model, heads, d_head, d_inner, dropout,
        attn_dropout, positional: see :class:`IPSOptions`.
        extractor: a registered extractor name or instance.
    """

    def __init__(self, feature: nn.Module, *, num_classes: int, patch_size: int | Sequence[int],
                 memory: int = 5, chunk: int = 100, stride: int | None = None,
                 d_model: int = 128, heads: int = 8, d_head: int = 16, d_inner: int = 512,
                 dropout: float = 0.1, attn_dropout: float = 0.1, positional: bool = True,
                 extractor: Any = "auto", head_gain: float = 1.0) -> None:
        super().__init__()
        self.feature = feature
        # layer norm: the task's features are L2-normalised (norm 1), so after
        # a linear map they would be far smaller than the position encoding
        # (components of variance 1/2), which would then decide the scores alone
        self.project = nn.Sequential(nn.Linear(feature.out_features, d_model),
                                     nn.LayerNorm(d_model))
        self.pool = CrossAttentionPool(d_model, heads=heads, d_head=d_head, d_inner=d_inner,
                                       dropout=dropout, attn_dropout=attn_dropout)
        self.head = linear_head(d_model, num_classes, head_gain)
        self.patch_size, self.stride = patch_size, stride
        self.memory, self.chunk, self.positional = memory, chunk, positional
        self.extractor = get_extractor(extractor)

    def grid(self, high: Sequence[int]) -> PatchGrid:
        """The patch grid over a full-resolution image of spatial shape ``high``,
        at least M patches (keeping fewer than M would change the model)."""
        patch, stride = self._patch_stride(len(high))
        grid = PatchGrid(high, patch, stride)
        if grid.size < self.memory:
            raise self._too_few("the image", high, grid.size, patch, stride)
        return grid

    def item_grids(self, highs: Sequence[Sequence[int]]) -> ItemGrids:
        """One patch grid per image of 2-D shape ``highs[b]``, each at least M patches."""
        patch, stride = self._patch_stride(2)
        try:
            grids = ItemGrids(highs, patch, stride)
        except ValueError as exc:
            raise ValueError(f"ips: patch_size {self.patch_size}, method.stride "
                             f"{self.stride}: {exc}") from None
        if int(grids.sizes.min()) < self.memory:
            b = int(grids.sizes.argmin())
            raise self._too_few(f"item {b}'s image", highs[b], int(grids.sizes[b]), patch, stride)
        return grids

    def _too_few(self, what: str, high: Sequence[int], size: int, patch: Sequence[int],
                 stride: Sequence[int]) -> ValueError:
        return ValueError(f"{what} {tuple(high)} has a grid of {size} IPS patches (patch_size "
                          f"{tuple(patch)}, stride {tuple(stride)}), fewer than "
                          f"method.memory={self.memory}; lower method.memory or method.stride")

    def _patch_stride(self, dims: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        patch = as_patch_size(self.patch_size, dims)
        return patch, patch if self.stride is None else as_patch_size(self.stride, dims)

    def embed(self, patches: Tensor, index: Tensor) -> Tensor:
        """(B, n, C, *patch) patches at grid ``index`` (B, n) -> (B, n, d_model)."""
        b, n = patches.shape[:2]
        emb = self.project(self.feature(patches.flatten(0, 1))).view(b, n, -1)
        if self.positional:
            emb = emb + position_encoding(index, emb.shape[-1]).to(emb.dtype)
        return emb

    @torch.no_grad()
    def select(self, x_high: Tensor | np.ndarray | Sequence, grid: PatchGrid | ItemGrids,
               like: Tensor) -> tuple[Tensor, Tensor]:
        """The grid indices (B, M) of the M best-scored patches and their scores:
        the scan, in evaluation mode (no dropout, batch-norm statistics untouched).
        A position past an item's own grid (images of different sizes) scores
        -inf: never among the M of an item whose grid has at least M patches."""
        b = like.shape[0]
        modes = [(m, m.training) for m in (self.feature, self.project, self.pool)]
        for m, _ in modes:
            m.eval()

        def score(start: int, stop: int) -> Tensor:
            index = torch.arange(start, stop, device=like.device).expand(b, -1)
            offsets = grid.offsets(index)
            patches = read_patches(self.extractor, x_high, offsets, grid.patch, like)
            scores = self.pool.score(self.embed(patches, index))
            return scores.masked_fill(~grid.inside(index), float("-inf"))

        try:
            return iterative_top_m(score, grid.size, self.memory, self.chunk)
        finally:
            for m, mode in modes:
                m.train(mode)

    def forward(self, x_low: Tensor, x_high: Tensor | np.ndarray | Sequence, **_: Any
                ) -> ModelOutput:
        """``x_high``: (B, C, *high) images, or a batch of 2-D image sources
        (:class:`ats.sources.SourceBatch`) of their own sizes, each scanned over
        its own grid (docs/methods.md, "IPS"); ``x_low`` is not read."""
        if is_source_input(x_high):
            x_high = check_source_inputs("ips", x_low, x_high, self._patch_stride(2)[0])
            grid = self.item_grids(x_high.high_sizes.tolist())
        else:
            check_tensor_inputs("ips", x_low, x_high)
            grid = self.grid(tuple(x_high.shape[2:]))
        index, _ = self.select(x_high, grid, x_low)
        offsets = grid.offsets(index)
        patches = read_patches(self.extractor, x_high, offsets, grid.patch, x_low)
        pooled, attention = self.pool(self.embed(patches, index))
        selection = Selection(offsets, patches, attention.detach())
        # the layer norm's output has norm √D; scaled to norm 1 like the other
        # models' (L2-normalised) features, so that head_gain means the same
        pooled = pooled / pooled.shape[-1] ** 0.5
        return ModelOutput(self.head(pooled), selection=selection)

    def check_input_shapes(self, low: Sequence[int], high: Sequence[int]) -> None:
        """A patch must fit the image."""
        try:
            self.grid(tuple(high[1:]))
        except ValueError as exc:
            raise ValueError(f"ips: patch_size {self.patch_size}, method.stride "
                             f"{self.stride}: {exc}") from None


@model.register("ips")
class IPSModel(ModelPlugin):
    """Iterative patch selection (Bergner et al., ICLR 2023): all patches scored in
    no-grad chunks, the best M kept, pooled by cross-attention."""

    options = IPSOptions

    def build(self, task: Any, config: RunConfig, options: IPSOptions) -> Classifier:
        return IPSClassifier(
            task.feature_network(config), num_classes=task.num_classes,
            patch_size=config.patch_size, extractor=config.extractor,
            head_gain=config.head_gain, **dataclasses.asdict(options))

