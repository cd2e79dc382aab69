"""Megapixel MNIST: the data layer (:mod:`.data`, :mod:`.generator`) and the task plugin (:mod:`.task`).

The package re-exports the dataset API. The task, its data and its
defaults: docs/tasks/mega_mnist.md.
"""

from .data import (
    PRESETS,
    MegaMNISTConfig,
    MegapixelMNIST,
    make_datasets,
    make_noise_patterns,
)

__all__ = ["PRESETS", "MegaMNISTConfig", "MegapixelMNIST", "make_datasets", "make_noise_patterns"]
