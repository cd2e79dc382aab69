"""Classifiers a task trains: attention sampling and the two CNN baselines.

All three take ``(x_low, x_high)`` and return a :class:`ModelOutput`, so the
training engine treats them alike.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from ats.core.model import ATSOutput, AttentionSampling

__all__ = ["ModelOutput", "ATSClassifier", "CNNClassifier"]


class ModelOutput(NamedTuple):
    """logits (B, classes); ``ats`` holds the attention-sampling record
    (attention map, patches, offsets, ...) for the ATS model, else None."""

    logits: Tensor
    ats: ATSOutput | None = None


class ATSClassifier(nn.Module):
    """Attention sampling followed by a linear classifier on the estimate.

    Args:
        ats: the :class:`AttentionSampling` module.
        feature_dim: D, the feature network's output size.
        num_classes: number of classes.
    """

    def __init__(self, ats: AttentionSampling, *, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.ats = ats
        self.head = nn.Linear(feature_dim, num_classes)
        nn.init.xavier_uniform_(self.head.weight)  # Keras Dense defaults
        nn.init.zeros_(self.head.bias)

    def forward(
        self,
        x_low: Tensor,
        x_high: Tensor | np.ndarray,
        *,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
    ) -> ModelOutput:
        out = self.ats(x_low, x_high, generator=generator, deterministic=deterministic)
        return ModelOutput(self.head(out.features), out)


class CNNClassifier(nn.Module):
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

    def __init__(self, network: nn.Module, *, feature_dim: int, num_classes: int, view: str) -> None:
        super().__init__()
        if view not in ("low", "full"):
            raise ValueError(f"view must be 'low' or 'full', got {view!r}")
        self.view = view
        self.network = network
        self.head = nn.Linear(feature_dim, num_classes)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x_low: Tensor, x_high: Tensor | np.ndarray, **_: object) -> ModelOutput:
        if self.view == "low":
            x = x_low
        else:
            x = torch.as_tensor(x_high).to(x_low.device, non_blocking=True)
            if not x.is_floating_point():  # integer images: [0, 255] -> [0, 1]
                x = x.to(x_low.dtype) / float(torch.iinfo(x.dtype).max)
            x = x.to(x_low.dtype)
        return ModelOutput(self.head(self.network(x)))
