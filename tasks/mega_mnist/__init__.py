"""Megapixel MNIST (ATS_SPEC section 3.1): the data layer.

The task plugin (networks, defaults, registration) is added separately; this
package only re-exports the dataset API so that importing it stays light.
"""

from .data import PRESETS, MegaMNISTConfig, MegapixelMNIST, make_datasets, make_noise_patterns

__all__ = ["PRESETS", "MegaMNISTConfig", "MegapixelMNIST", "make_datasets", "make_noise_patterns"]
