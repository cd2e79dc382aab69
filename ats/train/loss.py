"""The training loss: the task's objective and the terms added to it (docs/training.md)."""

from __future__ import annotations

import torch
from torch import nn

from ats.classifier import ModelOutput
from ats.config import RunConfig
from ats.contracts import regularization_terms
from ats.core.regularizers import entropy_regularizer
from ats.objective import Objective

__all__ = ["training_loss"]


def training_loss(out: ModelOutput, y: torch.Tensor, *, objective: Objective, config: RunConfig,
                  model: nn.Module, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """A scalar: the objective on ``out.logits`` (cross-entropy, or binary
    cross-entropy for multi-label tasks), plus

    * ``config.patch_loss`` times the objective of the head on each sampled
      patch (``out.patch_logits``, (B, N, classes)), every patch labelled with
      its image's label, when the model gives them;
    * the entropy regulariser on the attention map (``config.entropy``), when
      the model has one;
    * every :class:`~ats.contracts.Regularized` term of ``model``.
    """
    loss = objective.loss(out.logits, y, weight=class_weights)
    if out.patch_logits is not None and config.patch_loss > 0:
        n = out.patch_logits.shape[1]
        loss = loss + config.patch_loss * objective.loss(
            out.patch_logits.flatten(0, 1), y.repeat_interleave(n, dim=0), weight=class_weights)
    if out.ats is not None and config.entropy != 0.0:
        loss = loss + entropy_regularizer(out.ats.attention, config.entropy)
    for term in regularization_terms(model):
        loss = loss + term
    return loss
