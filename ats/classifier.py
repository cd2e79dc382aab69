"""Classifiers a task trains: attention sampling and the two CNN baselines (the
peer selection methods DPS and IPS are in :mod:`ats.plugins.models`).

Every model is a :class:`Classifier`: it takes ``(x_low, x_high)`` and
returns a :class:`ModelOutput`, so the training engine treats them alike;
what only some models have (a sampling record to regularise and draw, random
draws to average over at evaluation) is declared by the model, never looked
up by its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ats.core.geometry import as_patch_size
from ats.core.model import ATSOutput, AttentionSampling

__all__ = ["ModelOutput", "Selection", "Classifier", "ATSClassifier", "CNNClassifier",
           "linear_head"]


@dataclass
class Selection:
    """The patches a non-sampling selection method chose (DPS, IPS), to draw and log.

    Attributes:
        offsets: (B, N, d) top-left corners in x_high pixels.
        patches: (B, N, C, *patch) the patches the feature network saw.
        weights: (B, N) what each patch weighs in the model's output (DPS: its
            soft top-k indicator mass; IPS: the aggregator's attention).
        scores: (B, *space) the score map the selection ranked, when the
            method has one on a grid (DPS: the scorer on the low view), else None.
    """

    offsets: Tensor
    patches: Tensor
    weights: Tensor
    scores: Tensor | None = None


class ModelOutput(NamedTuple):
    """logits (B, classes); ``ats`` holds the attention-sampling record
    (attention map, patches, offsets, ...) for the ATS model, else None."""

    logits: Tensor
    ats: ATSOutput | None = None
    #: (B, N, classes) the head applied to each sampled patch's feature, for
    #: the auxiliary patch loss (``patch_loss``), when the model samples patches
    patch_logits: Tensor | None = None
    #: the selection record of DPS and IPS (pictures and logs), else None
    selection: Selection | None = None


class Classifier(nn.Module):
    """Base class of the models a task builds (the engine's model contract).

    ``forward(x_low, x_high, *, generator=None, deterministic=False)`` returns
    a :class:`ModelOutput`; ``x_low`` is on the model's device, ``x_high``
    anywhere (host memory included).
    """

    #: the forward pass draws random samples: evaluation averages the test
    #: error over several sampling seeds, and ``deterministic=True`` (top-N
    #: inference) is a different model worth evaluating too
    stochastic: ClassVar[bool] = False

    def check_input_shapes(self, low: Sequence[int], high: Sequence[int]) -> None:
        """Raise ``ValueError`` when items of shapes (C, *low) and (C, *high)
        cannot work with this model; called once before training."""


class ATSClassifier(Classifier):
    """Attention sampling followed by a linear classifier on the estimate.

    Args:
        ats: the :class:`AttentionSampling` module.
        feature_dim: D, the feature network's output size.
        num_classes: number of classes.
        head_gain: the head's init scale (:func:`linear_head`).
        patch_logits: also apply the head to each patch's feature
            (``ModelOutput.patch_logits``, for the ``patch_loss``); off, the
            forward pass does no work for it.
    """

    stochastic = True

    def __init__(self, ats: AttentionSampling, *, feature_dim: int, num_classes: int,
                 head_gain: float = 1.0, patch_logits: bool = False) -> None:
        super().__init__()
        self.ats = ats
        self.head = linear_head(feature_dim, num_classes, head_gain)
        self.patch_logits = patch_logits

    def forward(
        self,
        x_low: Tensor,
        x_high: Tensor | np.ndarray,
        *,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
    ) -> ModelOutput:
        out = self.ats(x_low, x_high, generator=generator, deterministic=deterministic)
        patch_logits = self.head(out.patch_features) if self.patch_logits else None
        return ModelOutput(self.head(out.features), out, patch_logits)

    def check_input_shapes(self, low: Sequence[int], high: Sequence[int]) -> None:
        """N must fit the attention map (without replacement) and the patch the
        image: one dry run of the attention network on zeros of the real size."""
        ats = self.ats
        device = next(self.parameters()).device
        with torch.no_grad():
            attention = ats.attention_map(torch.zeros((1, *low), device=device))
        positions = int(np.prod(attention.shape[1:]))
        if not ats.sampler.replace and ats.n_patches > positions:
            raise ValueError(
                f"n_patches={ats.n_patches} is larger than the attention map "
                f"{tuple(attention.shape[1:])} ({positions} positions); lower n_patches or "
                "use --sampler with_replacement"
            )
        try:
            patch = as_patch_size(ats.patch_size, len(high) - 1)
        except ValueError:
            patch = None
        if patch is None or any(p > h for p, h in zip(patch, high[1:])):
            raise ValueError(
                f"patch_size {ats.patch_size} does not fit the high-resolution image "
                f"{tuple(high[1:])}"
            )


class CNNClassifier(Classifier):
    """A CNN on one whole view, ``"low"`` (x_low) or ``"full"`` (x_high).

    The baseline attention sampling is measured against: the full-resolution
    CNN processes every pixel (moving the whole image to the device), the
    low-resolution CNN sees only the cheap view.

    Args:
        network: maps (B, C, *view) to features (B, D) for any view size
            (global pooling at the end).
        feature_dim: D.
        num_classes: number of classes.
        view: ``"low"`` or ``"full"``.
    """

    def __init__(self, network: nn.Module, *, feature_dim: int, num_classes: int, view: str,
                 head_gain: float = 1.0) -> None:
        super().__init__()
        if view not in ("low", "full"):
            raise ValueError(f"view must be 'low' or 'full', got {view!r}")
        self.view = view
        self.network = network
        self.head = linear_head(feature_dim, num_classes, head_gain)

    def forward(self, x_low: Tensor, x_high: Tensor | np.ndarray, **_: object) -> ModelOutput:
        if self.view == "low":
            x = x_low
        else:
            x = torch.as_tensor(x_high).to(x_low.device, non_blocking=True)
            if not x.is_floating_point():  # integer images: [0, 255] -> [0, 1]
                x = x.to(x_low.dtype) / float(torch.iinfo(x.dtype).max)
            x = x.to(x_low.dtype)
        return ModelOutput(self.head(self.network(x)))


def linear_head(feature_dim: int, num_classes: int, gain: float = 1.0) -> nn.Linear:
    """The linear classifier: Keras Dense's Glorot-uniform init (``gain`` 1) times
    ``gain``. Features are L2-normalised, so the logits are at most the weights'
    norm: a larger gain lets the softmax leave uniform from the first steps."""
    head = nn.Linear(feature_dim, num_classes)
    nn.init.xavier_uniform_(head.weight, gain=gain)
    nn.init.zeros_(head.bias)
    return head
