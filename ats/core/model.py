"""The AttentionSampling module: attention -> sample -> extract -> features -> estimate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ats.core.buffers import PatchBuffers
from ats.core.distribution import attention_softmax
from ats.core.extract import Extractor, get_extractor, torch_dtype
from ats.core.geometry import as_patch_size, patch_offsets
from ats.core.sampling import Sampler
from ats.registry import sampler as sampler_registry

__all__ = ["ATSOutput", "AttentionSampling", "PatchBuffers"]


@dataclass
class ATSOutput:
    """Everything one forward pass produced, for the loss, plots and logs.

    Attributes:
        features: (B, D) the estimate of the attention-weighted feature.
        attention: (B, *space) the full attention distribution.
        patches: (B, N, C, *patch) the high-resolution patches seen.
        offsets: (B, N, d) top-left corner of each patch in x_high pixels.
        samples: (B, N, d) the sampled positions on the attention grid.
        probs: (B, N) the attention probability of each sampled position.
        patch_features: (B, N, D) the feature of each patch (for auxiliary
            losses and inspection; the estimate above is what a head reads).
    """

    features: Tensor
    attention: Tensor
    patches: Tensor
    offsets: Tensor
    samples: Tensor
    probs: Tensor
    patch_features: Tensor | None = None


class AttentionSampling(nn.Module):
    """Attention sampling (Katharopoulos & Fleuret, 2019) as one module.

    The attention network scores a cheap low-resolution view; ``n_patches``
    positions are drawn from the softmax of those scores; the feature network
    sees only the full-resolution patches there; the sampler's unbiased
    estimator combines their features, with a custom backward that trains the
    attention network too.

    Args:
        attention: maps x_low (B, C, *low) to scores (B, 1, *space) or
            (B, *space), 1 to 3 spatial dims.
        feature: maps patches (B*N, C, *patch) to features (B*N, D).
        n_patches: N, the number of patches per image.
        patch_size: patch extent in x_high pixels, an int or one per dim.
        receptive_field: of the attention network in x_low pixels, for
            "valid" convolution stacks (0 for "same" padding); the sample grid
            tiles x_low minus ``receptive_field / 2`` on each side.
        sampler: a registered sampler name or a :class:`Sampler`.
        extractor: a registered extractor name or an :class:`Extractor`;
            ``"auto"`` picks by where x_high lives.
        smoothing: attention smoothing ``s``: every probability >= s / K.
            The default 1e-5 is the training default (``RunConfig.smoothing``,
            the original Megapixel MNIST value); 0 lets a peaked softmax
            underflow to exact zeros (docs/method.md, "Attention distribution").

    ``x_high`` may stay in host memory (a CPU tensor or a numpy array,
    memory-mapped ones included) while the networks run on an accelerator:
    only the patches are moved. Integer images are converted to float32 in
    [0, 1] during extraction. Patches of host images are extracted into
    buffers the module reuses once nothing references them any more
    (:class:`PatchBuffers`, :attr:`patch_buffers`): no page faults of fresh
    memory on every step. With the networks on CUDA those buffers are pinned
    and the copy to the device does not block the host.
    """

    def __init__(
        self,
        attention: nn.Module,
        feature: nn.Module,
        *,
        n_patches: int,
        patch_size: int | Sequence[int],
        receptive_field: int = 0,
        sampler: str | Sampler = "without_replacement",
        extractor: str | Extractor = "auto",
        smoothing: float = 1e-5,
    ) -> None:
        super().__init__()
        if not isinstance(n_patches, int) or n_patches < 1:
            raise ValueError(f"n_patches must be a positive int, got {n_patches!r}")
        if receptive_field < 0:
            raise ValueError(f"receptive_field must be >= 0, got {receptive_field!r}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
        self.attention = attention
        self.feature = feature
        self.n_patches = n_patches
        self.patch_size = as_patch_size(patch_size)
        self.receptive_field = receptive_field
        self.sampler = sampler_registry.build(sampler) if isinstance(sampler, str) else sampler
        self.extractor = get_extractor(extractor)
        self.smoothing = smoothing
        #: host buffers the patches are extracted into (None: a fresh output per call)
        self.patch_buffers: PatchBuffers | None = PatchBuffers()

    def attention_map(self, x_low: Tensor) -> Tensor:
        """(B, C, *low) -> (B, *space) attention distribution."""
        return attention_softmax(self.attention(x_low), self.smoothing)

    def forward(
        self,
        x_low: Tensor,
        x_high: Tensor | np.ndarray,
        *,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
    ) -> ATSOutput:
        """Run attention sampling on a batch.

        Args:
            x_low: (B, C, *low) the low-resolution view, on the model's device.
            x_high: (B, C, *high) the full-resolution images, anywhere; or a
                batch of image sources (:class:`ats.sources.SourceBatch`, or a
                list of sources), 2-D images of their own sizes read lazily
                (docs/sources.md, "Images of different sizes").
            generator: randomness for the sampler (on x_low's device).
            deterministic: take the N most probable positions instead of
                sampling (an inference-time ablation; not unbiased).
        """
        if not isinstance(x_high, (Tensor, np.ndarray)) and _is_sources(x_high):
            return self._forward_sources(x_low, x_high, generator, deterministic)
        patch_size = self._check_inputs(x_low, x_high)
        attention = self.attention_map(x_low)
        self._check_attention(attention, x_low)
        samples, probs = self._draw(attention, generator, deterministic)
        offsets = patch_offsets(
            samples,
            sample_space=tuple(attention.shape[1:]),
            low_shape=tuple(x_low.shape[2:]),
            high_shape=tuple(x_high.shape[2:]),
            patch_size=patch_size,
            receptive_field=self.receptive_field,
        )
        patches = self._extract(x_high, offsets, patch_size, x_low.device)
        return self._estimate(x_low, attention, patches, offsets, samples, probs)

    def _check_attention(self, attention: Tensor, x_low: Tensor) -> None:
        if attention.ndim != x_low.ndim - 1:
            raise ValueError(
                f"the attention network must return (B, 1, *space) or (B, *space) with "
                f"{x_low.ndim - 2} spatial dims like x_low {tuple(x_low.shape)}, got "
                f"attention of shape {tuple(attention.shape)}"
            )

    def _draw(self, attention: Tensor, generator: torch.Generator | None,
              deterministic: bool) -> tuple[Tensor, Tensor]:
        if deterministic:
            return self.sampler.top(attention, self.n_patches)
        return self.sampler.sample(attention, self.n_patches, generator=generator)

    def _estimate(self, x_low: Tensor, attention: Tensor, patches: Tensor, offsets: Tensor,
                  samples: Tensor, probs: Tensor) -> ATSOutput:
        """The features of the patches and the sampler's estimate of their mean."""
        if patches.is_floating_point() and patches.dtype != x_low.dtype:
            patches = patches.to(x_low.dtype)
        b, n = patches.shape[:2]
        feats = self.feature(patches.reshape(b * n, *patches.shape[2:]))
        feats = feats.reshape(b, n, -1)
        expected = self.sampler.expectation(feats, probs)
        return ATSOutput(expected, attention, patches, offsets, samples, probs, feats)

    def _forward_sources(self, x_low: Tensor, x_high: object,
                         generator: torch.Generator | None, deterministic: bool) -> ATSOutput:
        """:meth:`forward` on a batch of sources: each item's low view may fill
        only part of ``x_low`` (the rest is padding, never sampled) and its
        patches are read from its own full-resolution frame (docs/sources.md)."""
        from ats.sources import frames
        from ats.sources.batch import as_source_batch

        batch = as_source_batch(x_high)
        patch_size = self._check_sources(x_low, batch)
        low_sizes = batch.low_sizes_for(x_low)
        scores = self.attention(x_low)
        space = tuple(scores.shape[-2:])
        valid = frames.valid_cells(low_sizes, space, tuple(x_low.shape[2:]), self.receptive_field)
        fewest = int(valid.flatten(1).sum(1).min())
        if not self.sampler.replace and fewest < self.n_patches:
            raise ValueError(f"an item's low view covers {fewest} attention cells, fewer than "
                             f"n_patches={self.n_patches}; enlarge its low view or use "
                             "with_replacement")
        attention = frames.masked_attention_softmax(scores, valid.to(scores.device),
                                                    self.smoothing)
        self._check_attention(attention, x_low)
        samples, probs = self._draw(attention, generator, deterministic)
        dev = samples.device
        offsets = frames.item_offsets(samples, space, tuple(x_low.shape[2:]), low_sizes.to(dev),
                                      batch.high_sizes.to(dev), patch_size,
                                      self.receptive_field)
        patches = self.read_sources(batch, offsets, patch_size, x_low.device)
        return self._estimate(x_low, attention, patches, offsets, samples, probs)

    def read_sources(self, sources: Sequence, offsets: Tensor, patch_size: tuple[int, ...],
                     device: torch.device) -> Tensor:
        """The float32 patches of a batch of sources, on ``device``: read by
        :func:`ats.sources.read_patches` (only the tiles they touch) into a
        reused host buffer, moved like :meth:`_extract`'s."""
        from ats.sources.read import read_patches

        shape = (*offsets.shape[:2], sources[0].channels, *patch_size)
        pinned = device.type == "cuda"
        out = None if self.patch_buffers is None else \
            self.patch_buffers.take(shape, torch.float32, pinned=pinned)
        patches = read_patches(sources, offsets.cpu(), patch_size, as_float=True, out=out)
        return self._to_device(patches, device, pinned and out is not None)

    def _extract(self, x_high: Tensor | np.ndarray, offsets: Tensor, patch_size: tuple[int, ...],
                 device: torch.device) -> Tensor:
        """The patches, on ``device``. From a host image they are extracted into
        a reused buffer, pinned when ``device`` is CUDA, and copied with
        ``non_blocking=True``, which then really does not block the host."""
        as_float = _is_integer(x_high)
        if self.patch_buffers is None or not _in_host_memory(x_high):
            patches = self.extractor(x_high, offsets, patch_size, as_float=as_float)
            return patches.to(device, non_blocking=True)
        shape = (*offsets.shape[:2], x_high.shape[1], *patch_size)
        dtype = torch.float32 if as_float else torch_dtype(x_high)
        pinned = device.type == "cuda"
        out = self.patch_buffers.take(shape, dtype, pinned=pinned)
        patches = self.extractor(x_high, offsets, patch_size, as_float=as_float, out=out)
        return self._to_device(patches, device, pinned)

    def _to_device(self, patches: Tensor, device: torch.device, pinned: bool) -> Tensor:
        """Host patches on ``device``; from a pinned buffer without blocking."""
        if not pinned:
            return patches.to(device)
        moved = patches.to(device, non_blocking=True)
        # The buffer is held until this copy, queued on device's stream, is done.
        self.patch_buffers.copied(patches, torch.cuda.current_stream(device))
        return moved

    def _check_sources(self, x_low: Tensor, batch: Sequence) -> tuple[int, ...]:
        """Validate a batch of sources; returns the 2-D patch size."""
        if not isinstance(x_low, Tensor) or x_low.ndim != 4:
            raise ValueError(f"with image sources as x_high, x_low must be a (B, C, h, w) "
                             f"tensor, got {getattr(x_low, 'shape', type(x_low).__name__)}")
        if len(batch) != x_low.shape[0]:
            raise ValueError(f"x_low and x_high must have the same batch size, got "
                             f"{x_low.shape[0]} and {len(batch)} sources")
        patch = as_patch_size(self.patch_size, 2)
        small = [i for i, s in enumerate(batch) if any(p > h for p, h in zip(patch, s.shape[1:]))]
        if small:
            raise ValueError(f"patch_size {patch} is larger than the image of item {small[0]}, "
                             f"{batch[small[0]].shape[1:]}")
        return patch

    def _check_inputs(self, x_low: Tensor, x_high: Tensor | np.ndarray) -> tuple[int, ...]:
        """Validate the inputs; returns the patch size with one entry per dim."""
        if not isinstance(x_low, Tensor):
            raise TypeError(f"x_low must be a torch.Tensor, got {type(x_low).__name__}")
        if not 3 <= x_low.ndim <= 5:
            raise ValueError(
                f"x_low must have shape (B, C, *low) with 1 to 3 spatial dims, got "
                f"{tuple(x_low.shape)}"
            )
        d = x_low.ndim - 2
        patch_size = self.patch_size if isinstance(self.patch_size, tuple) else (self.patch_size,) * d
        if len(patch_size) != d:
            raise ValueError(
                f"patch_size {self.patch_size} has {len(patch_size)} dims but x_low "
                f"{tuple(x_low.shape)} has {d} spatial dims"
            )
        if not isinstance(x_high, (Tensor, np.ndarray)):
            raise TypeError(
                f"x_high must be a torch.Tensor or numpy.ndarray of shape (B, C, *high), got "
                f"{type(x_high).__name__}" + (" (stack the images into one array)"
                                              if isinstance(x_high, (list, tuple)) else "")
            )
        if len(x_high.shape) != d + 2:
            raise ValueError(
                f"x_high must have shape (B, C, *high) with {d} spatial dims, got "
                f"{tuple(x_high.shape)}"
            )
        if x_high.shape[0] != x_low.shape[0]:
            raise ValueError(
                f"x_low and x_high must have the same batch size, got {x_low.shape[0]} "
                f"and {x_high.shape[0]}"
            )
        high = tuple(x_high.shape[2:])
        if any(p > h for p, h in zip(patch_size, high)):
            raise ValueError(
                f"patch_size {patch_size} is larger than the high-resolution image {high}"
            )
        return patch_size

    def extra_repr(self) -> str:
        return (
            f"n_patches={self.n_patches}, patch_size={self.patch_size}, "
            f"receptive_field={self.receptive_field}, sampler={self.sampler!r}, "
            f"extractor={getattr(self.extractor, 'name', self.extractor)!r}, "
            f"smoothing={self.smoothing}"
        )


def _is_sources(x_high: object) -> bool:
    from ats.sources.batch import is_sources

    return is_sources(x_high)


def _in_host_memory(x: Tensor | np.ndarray) -> bool:
    return isinstance(x, np.ndarray) or x.device.type == "cpu"


def _is_integer(x: Tensor | np.ndarray) -> bool:
    if isinstance(x, Tensor):
        return not x.is_floating_point()
    return np.issubdtype(x.dtype, np.integer)
