"""Dataset readers shared by the tasks (no task knowledge here)."""

from .mnist import (
    MIRRORS,
    MNIST,
    MNIST_FILES,
    MNIST_MD5,
    MNISTDataError,
    cache_dir,
    load_mnist,
    parse_idx,
    read_idx,
)

__all__ = [
    "MIRRORS",
    "MNIST",
    "MNIST_FILES",
    "MNIST_MD5",
    "MNISTDataError",
    "cache_dir",
    "load_mnist",
    "parse_idx",
    "read_idx",
]
