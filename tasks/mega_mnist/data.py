"""Megapixel MNIST (docs/tasks/mega_mnist.md): the dataset, its settings and presets.

Images are rendered on demand from the draws of :mod:`tasks.mega_mnist.generator`,
which reproduces the original ``make_mnist.py`` call for call.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from tasks.mega_mnist.generator import (
    DIGIT_SIZE,
    N_CLASSES,
    N_NOISE_PATTERNS,
    get_numbers,
    get_positions,
    is_int,
    make_noise_patterns,
    paste,
    place_noise,
    rescale_object,
    validate_digits,
    validate_geometry,
    validate_seed,
)

__all__ = [
    "DIGIT_SIZE",
    "N_CLASSES",
    "N_NOISE_PATTERNS",
    "MegaMNISTConfig",
    "PRESETS",
    "TARGETS",
    "MegapixelMNIST",
    "make_noise_patterns",
    "make_datasets",
]


#: what an image's label is (Bergner et al., ICLR 2023, Megapixel MNIST's four tasks):
#: the majority digit (the paper's task), the largest digit, the top-most digit
#: (smallest row, then column), or the set of digits present (multi-label)
TARGETS = ("majority", "max", "top", "multi")
Target = Literal["majority", "max", "top", "multi"]


class _Shapes:
    """``high_shape``/``low_shape`` from the attributes ``height``, ``width`` and ``scale``.

    Shared by :class:`MegaMNISTConfig` and :class:`MegapixelMNIST`, which both have them.
    """

    height: int
    width: int
    scale: float

    @property
    def high_shape(self) -> tuple[int, int, int]:
        """Shape of ``x_high``: (1, height, width)."""
        return (1, self.height, self.width)

    @property
    def low_shape(self) -> tuple[int, int, int]:
        """Shape of ``x_low``: (1, int(height*scale), int(width*scale))."""
        return (1, int(self.height * self.scale), int(self.width * self.scale))


@dataclass(frozen=True)
class MegaMNISTConfig(_Shapes):
    """Settings of a Megapixel MNIST train/test pair.

    ``width``/``height`` are the high-resolution size in pixels; the low view
    is ``(int(height*scale), int(width*scale))``. ``n_noise`` is the number of
    noise placements per image; with ``noise=False`` they are still drawn (so
    the RNG stream is unchanged) but not rendered. ``seed`` is the dataset
    seed: the train set uses ``seed + 1``, the test set ``seed``.
    """

    width: int = 1500
    height: int = 1500
    scale: float = 0.12
    noise: bool = True
    n_noise: int = 50
    n_digits: int = 5
    n_positive: int = 3
    n_train: int = 5000
    n_test: int = 1000
    seed: int = 0
    #: canvas side of the training images in the first epochs, one per epoch
    #: (same digits, noise density and low-view scale; docs/tasks/mega_mnist.md)
    curriculum: tuple[int, ...] = ()
    #: the label: majority, max, top or multi (multi-label; see TARGETS)
    target: Target = "majority"

    def validate(self) -> None:
        """Raise ValueError naming the first invalid setting."""
        validate_geometry(self.width, self.height, self.scale, self.noise, self.n_noise,
                          self.n_digits, self.n_positive)
        for side in self.curriculum:
            if not is_int(side) or side > min(self.width, self.height):
                raise ValueError(f"curriculum canvas sides must be integers <= the canvas "
                                 f"({self.height}x{self.width}), got {side!r}; "
                                 "--set data.curriculum=() trains on the full canvas "
                                 "from the first epoch")
            self.stage(side).validate()
        for name in ("n_train", "n_test"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        validate_seed(self.seed, offset=1)
        if self.target not in TARGETS:
            raise ValueError(f"data.target must be one of {', '.join(TARGETS)}, "
                             f"got {self.target!r}")


    def stage(self, side: int) -> "MegaMNISTConfig":
        """These settings on a ``side`` x ``side`` canvas with the same noise
        density (and no curriculum of its own)."""
        n_noise = round(self.n_noise * side * side / (self.width * self.height))
        return dataclasses.replace(self, width=side, height=side, n_noise=n_noise,
                                   curriculum=())


#: Named settings. ``paper``: the paper's dataset (make_mnist.py defaults).
#: ``easy``: the docs' easy variant (500x500, no noise, scale 0.2).
#: ``smoke``: small and fast for CI, and it must visibly learn in its two
#: minutes: on 160x160 the five digits fill most patches, so learning starts
#: within a few thousand samples; without noise, which delays it (docs/tasks/mega_mnist.md).
PRESETS: dict[str, MegaMNISTConfig] = {
    "paper": MegaMNISTConfig(),
    "easy": MegaMNISTConfig(width=500, height=500, scale=0.2, noise=False),
    "smoke": MegaMNISTConfig(width=160, height=160, scale=0.25, noise=False, n_noise=1,
                             n_train=1000, n_test=200),
}


# --------------------------------------------------------------------------
# The dataset


class MegapixelMNIST(_Shapes, Dataset):
    """Megapixel MNIST images rendered on demand.

    Args:
        images: digits of ONE MNIST split, uint8 (N, 28, 28) in 0..255 (or
            floats in [0, 1]); the train split for train, test split for test.
        labels: their classes, integers (N,) in 0..9; every class must occur.
        n_samples: number of megapixel images.
        train: the RNG is seeded with ``seed + int(train)``.
        Other keyword arguments: see :class:`MegaMNISTConfig`.

    Items are dicts: ``x_low`` float32 tensor (1, int(H*s), int(W*s)) in [0, 1],
    ``x_high`` uint8 tensor (1, H, W) in 0..255, ``boxes`` the digits' boxes
    (:meth:`digit_boxes`), ``y`` the label of ``target``
    (:data:`TARGETS`): an int64 scalar tensor (majority, max, top) or a float32
    (10,) tensor of 0/1, the digits present (multi). The target changes the
    labels only, never the images or the random draws.

    Attributes (precomputed, everything else is rendered per item):
        digit_indices: int64 (n, n_digits), indices into ``images``, positives first.
        targets: int64 (n,).
        positions: int64 (n, n_digits, 2), (row, col) top-left of each digit.
        noise_patterns: float32 (50, 28, 28), the shared pattern bank.
        noise_positions: int64 (n, n_noise, 2); noise_ids: int64 (n, n_noise).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, n_samples: int = 5000,
                 width: int = 1500, height: int = 1500, scale: float = 0.12, noise: bool = True,
                 n_noise: int = 50, n_digits: int = 5, n_positive: int = 3, seed: int = 0,
                 train: bool = True, target: str = "majority") -> None:
        validate_geometry(width, height, scale, noise, n_noise, n_digits, n_positive)
        if not is_int(n_samples) or n_samples < 0:
            raise ValueError(f"n_samples must be an integer >= 0, got {n_samples!r}")
        validate_seed(seed, offset=int(train))
        if target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        self.target = target
        self.images, self.labels = validate_digits(images, labels)
        self.width, self.height, self.scale = int(width), int(height), float(scale)
        self.noise, self.n_noise = bool(noise), int(n_noise)
        self.n_digits, self.n_positive = int(n_digits), int(n_positive)
        self.seed, self.train = int(seed), bool(train)

        # The RNG calls of make_mnist.py, in its order: numbers, positions, noise.
        rng = np.random.RandomState(self.seed + int(self.train))
        self.digit_indices, self.targets = get_numbers(rng, n_samples, self.labels, n_digits, n_positive)
        self.positions = get_positions(rng, n_samples, self.width, self.height, n_digits)
        # Drawn even when noise is off so that the stream (and the data) agree.
        self.noise_patterns = make_noise_patterns(rng)
        self.noise_positions, self.noise_ids = place_noise(rng, n_samples, self.width, self.height, n_noise)

        # Shared by all images, so computed once: high- and low-res noise blocks.
        self._noise_high = (self.noise_patterns * 255).astype(np.uint8)
        self._noise_low = [rescale_object(p, self.scale) for p in self.noise_patterns]

    @classmethod
    def from_config(cls, config: MegaMNISTConfig, images: np.ndarray, labels: np.ndarray,
                    train: bool) -> "MegapixelMNIST":
        """The train (``n_train`` images) or test (``n_test``) set of ``config``."""
        return cls(images, labels, n_samples=config.n_train if train else config.n_test,
                   width=config.width, height=config.height, scale=config.scale,
                   noise=config.noise, n_noise=config.n_noise, n_digits=config.n_digits,
                   n_positive=config.n_positive, seed=config.seed, train=train,
                   target=config.target)

    def __len__(self) -> int:
        return len(self.targets)

    def _index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} images")
        return int(i) % n

    def _digit(self, j: int) -> np.ndarray:
        """Digit ``j`` as float32 (28, 28) in [0, 1], as the original stored them."""
        d = self.images[j]
        return d.astype(np.float32) / 255.0 if d.dtype == np.uint8 else d.astype(np.float32)

    def render_high(self, i: int) -> np.ndarray:
        """The full-resolution image ``i``, uint8 (H, W): digits, then noise overwriting them."""
        i = self._index(i)
        img = np.zeros((self.height, self.width), dtype=np.uint8)
        for (r, c), j in zip(self.positions[i], self.digit_indices[i]):
            img[r:r + DIGIT_SIZE, c:c + DIGIT_SIZE] = (self._digit(j) * 255).astype(np.uint8)
        if self.noise:
            for (r, c), k in zip(self.noise_positions[i], self.noise_ids[i]):
                # Full 28x28 blocks, zeros included: noise erases what is below.
                img[r:r + DIGIT_SIZE, c:c + DIGIT_SIZE] = self._noise_high[k]
        return img

    def render_low(self, i: int) -> np.ndarray:
        """The low-resolution view ``i``, uint8 (int(H*s), int(W*s)).

        Built object by object (NOT a resize of the high-resolution image):
        each digit and noise pattern is rescaled on its own and pasted at
        (int(r*s), int(c*s)) in the same overwrite order.
        """
        i = self._index(i)
        s = self.scale
        img = np.zeros(self.low_shape[1:], dtype=np.uint8)
        for (r, c), j in zip(self.positions[i], self.digit_indices[i]):
            paste(img, rescale_object(self._digit(j), s), int(r * s), int(c * s))
        if self.noise:
            for (r, c), k in zip(self.noise_positions[i], self.noise_ids[i]):
                paste(img, self._noise_low[k], int(r * s), int(c * s))
        return img

    def label(self, i: int) -> torch.Tensor:
        """The label of image ``i`` for this data set's ``target``."""
        i = self._index(i)
        digits = self.labels[self.digit_indices[i]]  # the classes of its digits
        if self.target == "majority":
            return torch.tensor(int(self.targets[i]), dtype=torch.int64)
        if self.target == "max":
            return torch.tensor(int(digits.max()), dtype=torch.int64)
        if self.target == "top":
            rows, cols = self.positions[i, :, 0], self.positions[i, :, 1]
            return torch.tensor(int(digits[np.lexsort((cols, rows))[0]]), dtype=torch.int64)
        present = torch.zeros(N_CLASSES, dtype=torch.float32)
        present[torch.from_numpy(np.unique(digits))] = 1.0
        return present

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x_low = self.render_low(i).astype(np.float32) / 255.0
        x_high = self.render_high(i)
        return {
            "x_low": torch.from_numpy(x_low[None]),
            "x_high": torch.from_numpy(x_high[None]),
            "y": self.label(i),
            "boxes": self.digit_boxes(i),
        }

    def digit_boxes(self, i: int) -> torch.Tensor:
        """int64 (n_digits, 4): each digit's (top, left, bottom, right) in
        ``x_high`` pixels (bottom/right exclusive), for the hit rate of the
        patches a model reads (:mod:`ats.train.hits`)."""
        top_left = torch.from_numpy(self.positions[self._index(i)].astype(np.int64))
        return torch.cat([top_left, top_left + DIGIT_SIZE], dim=1)

    def __repr__(self) -> str:
        return (f"MegapixelMNIST(n={len(self)}, {self.height}x{self.width}, scale={self.scale}, "
                f"noise={self.noise}, n_noise={self.n_noise}, digits={self.n_positive}/"
                f"{self.n_digits}, seed={self.seed}, train={self.train})")


def make_datasets(preset_or_config: str | MegaMNISTConfig = "paper",
                  data_dir: str | os.PathLike | None = None, *, download: bool = True,
                  **overrides) -> tuple[MegapixelMNIST, MegapixelMNIST]:
    """Build the (train, test) pair of a preset (``"paper"``, ``"easy"``, ``"smoke"``) or config.

    ``overrides`` replace config fields (e.g. ``n_train=100``). MNIST is read
    with :func:`ats.data.load_mnist` (``data_dir``, then ``$ATS_DATA_DIR``,
    then the user cache, downloading if ``download``); the train set is built
    from the MNIST train split, the test set from the test split.
    """
    if isinstance(preset_or_config, str):
        if preset_or_config not in PRESETS:
            raise ValueError(f"unknown Megapixel MNIST preset {preset_or_config!r}; "
                             f"known presets: {', '.join(PRESETS)}")
        config = PRESETS[preset_or_config]
    elif isinstance(preset_or_config, MegaMNISTConfig):
        config = preset_or_config
    else:
        raise ValueError(f"preset_or_config must be a preset name or a MegaMNISTConfig, "
                         f"got {type(preset_or_config).__name__}")
    fields = {f.name for f in dataclasses.fields(MegaMNISTConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown Megapixel MNIST setting(s) {unknown}; known: {sorted(fields)}")
    config = dataclasses.replace(config, **overrides)
    config.validate()

    from ats.data.mnist import load_mnist  # deferred: reading MNIST is only needed here

    train_digits = load_mnist("train", data_dir, download=download)
    test_digits = load_mnist("test", data_dir, download=download)
    train = MegapixelMNIST.from_config(config, train_digits.images, train_digits.labels, train=True)
    test = MegapixelMNIST.from_config(config, test_digits.images, test_digits.labels, train=False)
    if config.curriculum:
        from tasks.mega_mnist.curriculum import CanvasCurriculum

        stages = {side: MegapixelMNIST.from_config(config.stage(side), train_digits.images,
                                                   train_digits.labels, train=True)
                  for side in set(config.curriculum)}
        stages[config.width] = train
        train = CanvasCurriculum(stages, config.curriculum, config.width)
    return train, test
