"""What a model is trained to predict: the loss and the error of a task's labels.

The engine never asks which task it trains: the task hands it an
:class:`Objective` (``Task.objective(config)``), which owns the loss, the
count of wrong predictions and the form of the labels:

* :class:`SingleLabel`: ``y`` (B,) int64 class indices; softmax cross-entropy;
  an item is wrong when the arg-max is not its class;
* :class:`MultiLabel`: ``y`` (B, classes) float 0/1, the classes present;
  one sigmoid per class and binary cross-entropy (the mean over classes);
  an item is wrong unless *every* class is predicted right (exact match),
  as Bergner et al. (ICLR 2023) report the multi-label Megapixel MNIST task.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MultiLabel", "Objective", "SingleLabel"]


class Objective:
    """Base class: the loss and the error of one kind of label."""

    name: ClassVar[str] = "objective"

    def loss(self, logits: Tensor, y: Tensor, *, weight: Tensor | None = None,
             reduction: str = "mean") -> Tensor:
        """The loss of ``logits`` (B, classes) against ``y``."""
        raise NotImplementedError

    def wrong(self, logits: Tensor, y: Tensor) -> Tensor:
        """(B,) bool: which items are predicted wrong."""
        raise NotImplementedError

    def predictions(self, logits: Tensor) -> Tensor:
        """What the model predicts, in the form of ``y``."""
        raise NotImplementedError

    def random_targets(self, batch_size: int, num_classes: int, *,
                       generator: torch.Generator | None = None) -> Tensor:
        """Random labels of this form (benchmarks on synthetic inputs)."""
        raise NotImplementedError

    def describe(self, y: Tensor) -> str:
        """One label (or prediction) as short text, for picture titles."""
        return str(y.tolist())

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SingleLabel(Objective):
    """One class per item: softmax cross-entropy, arg-max error."""

    name = "single_label"

    def loss(self, logits: Tensor, y: Tensor, *, weight: Tensor | None = None,
             reduction: str = "mean") -> Tensor:
        return F.cross_entropy(logits, y, weight=weight, reduction=reduction)

    def wrong(self, logits: Tensor, y: Tensor) -> Tensor:
        return logits.argmax(1) != y

    def predictions(self, logits: Tensor) -> Tensor:
        return logits.argmax(1)

    def random_targets(self, batch_size: int, num_classes: int, *,
                       generator: torch.Generator | None = None) -> Tensor:
        return torch.randint(0, num_classes, (batch_size,), generator=generator)

    def describe(self, y: Tensor) -> str:
        return str(int(y))


class MultiLabel(Objective):
    """Any set of classes per item: a sigmoid per class, binary cross-entropy
    averaged over classes, exact-match error."""

    name = "multi_label"

    def loss(self, logits: Tensor, y: Tensor, *, weight: Tensor | None = None,
             reduction: str = "mean") -> Tensor:
        if weight is not None:
            raise ValueError("class_weights are not defined for multi-label tasks")
        per_item = F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype),
                                                      reduction="none").mean(1)
        return per_item.sum() if reduction == "sum" else per_item.mean()

    def wrong(self, logits: Tensor, y: Tensor) -> Tensor:
        return ((logits > 0) != (y > 0.5)).any(1)

    def predictions(self, logits: Tensor) -> Tensor:
        return (logits > 0).to(torch.float32)

    def random_targets(self, batch_size: int, num_classes: int, *,
                       generator: torch.Generator | None = None) -> Tensor:
        return torch.randint(0, 2, (batch_size, num_classes), generator=generator).float()

    def describe(self, y: Tensor) -> str:
        return "{" + ",".join(str(i) for i in torch.nonzero(y > 0.5).flatten().tolist()) + "}"
