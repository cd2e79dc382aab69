"""Small layers shared by the task networks."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["L2Normalize", "SameConv2d", "keras_init", "keras_batchnorm"]


class L2Normalize(nn.Module):
    """Scale each feature vector to unit L2 norm along ``dim``.

    Every feature network ends with it: with equal-norm features, sampling
    from the attention itself is the minimum-variance proposal (docs/method.md,
    "Estimator with replacement").
    """

    def __init__(self, dim: int = -1, eps: float = 1e-12) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=self.dim, eps=self.eps)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's ``padding="same"`` for any stride.

    TensorFlow pads ``total = max((ceil(n / s) - 1) * s + k - n, 0)`` with the
    extra pixel at the end (bottom/right). PyTorch's symmetric ``padding=1``
    gives the same output size for stride 2 on even inputs, but shifted by one
    pixel (docs/tasks/speed_limits.md).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0,
                         bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for n, k, s in zip(reversed(x.shape[2:]), reversed(self.kernel_size),
                           reversed(self.stride)):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def keras_init(module: nn.Module) -> nn.Module:
    """Keras defaults: glorot-uniform weights and zero biases for conv/linear.

    PyTorch's kaiming-uniform(a=sqrt(5)) with uniform biases is a different
    starting point; the paper's settings were tuned with Keras's.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def keras_batchnorm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with Keras's defaults: momentum 0.99 (0.01 in PyTorch terms), eps 1e-3."""
    return nn.BatchNorm2d(channels, momentum=0.01, eps=1e-3)
