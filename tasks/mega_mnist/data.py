"""Megapixel MNIST (ATS_SPEC section 3.1): digits scattered on a large canvas.

Each image of ``height x width`` pixels holds ``n_digits`` (5) MNIST digits at
non-overlapping random positions, ``n_positive`` (3) of them of the target
class and the others of other classes, plus ``n_noise`` (50) 28x28 patches of
line-scribble noise. The label is the target class, the strict majority.

The generator follows ``scripts/make_mnist.py`` of idiap/attention-sampling
step by step, with the same RNG calls in the same order and shapes, so that
for the paper settings the digit choices, positions and noise are those of
the original dataset. Two changes that keep the stream identical:

* ``np.random.RandomState(seed + int(train))`` replaces ``np.random.seed`` on
  the global RNG (same MT19937 stream, the global state is never touched);
* images are rendered lazily in ``__getitem__`` instead of being stored
  sparsified: only the indices, positions and noise placements are kept.

Coordinates are (row, col) top-left corners in high-resolution pixels; the
first axis is the height.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "DIGIT_SIZE",
    "N_CLASSES",
    "N_NOISE_PATTERNS",
    "MegaMNISTConfig",
    "PRESETS",
    "MegapixelMNIST",
    "make_noise_patterns",
    "make_datasets",
]

DIGIT_SIZE = 28  #: side of an MNIST digit and of a noise pattern, in pixels
N_CLASSES = 10  #: the target is drawn as int(rand() * 10)
N_NOISE_PATTERNS = 50  #: size of the shared bank of noise patterns (fixed in the original)
MAX_POSITION_TRIES = 10_000  #: redraws allowed per digit before giving up (see _get_positions)


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

    def validate(self) -> None:
        """Raise ValueError naming the first invalid setting."""
        _validate_geometry(self.width, self.height, self.scale, self.noise, self.n_noise,
                           self.n_digits, self.n_positive)
        for name in ("n_train", "n_test"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        _validate_seed(self.seed, offset=1)


#: Named settings. ``paper``: the paper's dataset (make_mnist.py defaults).
#: ``easy``: the docs' easy variant (500x500, no noise, scale 0.2).
#: ``smoke``: small and fast for CI; 2 noise placements on 300x300 keep the
#: paper's noise density (50 per 1500^2), so digits are rarely erased.
PRESETS: dict[str, MegaMNISTConfig] = {
    "paper": MegaMNISTConfig(),
    "easy": MegaMNISTConfig(width=500, height=500, scale=0.2, noise=False),
    "smoke": MegaMNISTConfig(width=300, height=300, scale=0.2, n_noise=2, n_train=500, n_test=100),
}


# --------------------------------------------------------------------------
# Validation


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _validate_seed(seed: object, offset: int) -> None:
    if not _is_int(seed) or seed < 0 or seed + offset >= 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32 - {1 + offset}], got {seed!r}")


def _validate_geometry(width: int, height: int, scale: float, noise: bool, n_noise: int,
                       n_digits: int, n_positive: int) -> None:
    """Check the settings that do not depend on the digit arrays."""
    for name, value in (("width", width), ("height", height)):
        if not _is_int(value) or value < DIGIT_SIZE:
            raise ValueError(f"{name} must be an integer >= {DIGIT_SIZE} (one digit), got {value!r}")
        if noise and value < 2 * DIGIT_SIZE:
            # Noise top-left corners are drawn in [28, size - 28).
            raise ValueError(f"{name} must be >= {2 * DIGIT_SIZE} when noise=True, got {value}")
    if not isinstance(scale, (float, int, np.floating)) or not 0 < scale <= 1:
        raise ValueError(f"scale must be a number in (0, 1], got {scale!r}")
    if int(height * scale) < 1 or int(width * scale) < 1:
        raise ValueError(
            f"scale={scale} gives an empty low-resolution view for {height}x{width} "
            f"(int(height*scale)={int(height * scale)}, int(width*scale)={int(width * scale)})"
        )
    if not _is_int(n_noise) or n_noise < 0:
        raise ValueError(f"n_noise must be an integer >= 0, got {n_noise!r}")
    if not _is_int(n_digits) or n_digits < 1:
        raise ValueError(f"n_digits must be an integer >= 1, got {n_digits!r}")
    if not _is_int(n_positive) or not 1 <= n_positive <= n_digits or 2 * n_positive <= n_digits:
        raise ValueError(
            f"n_positive must be a strict majority of n_digits={n_digits} "
            f"(n_digits/2 < n_positive <= n_digits), got {n_positive!r}"
        )
    # 28x28 squares that may not overlap fit at most (height//28)*(width//28)
    # times in the image (each contains exactly one point of a suitably shifted
    # 28-pixel lattice), so more digits would loop forever in the rejection.
    capacity = (height // DIGIT_SIZE) * (width // DIGIT_SIZE)
    if n_digits > capacity:
        raise ValueError(
            f"a {height}x{width} image (height x width) holds at most {capacity} non-overlapping "
            f"{DIGIT_SIZE}x{DIGIT_SIZE} digits, but n_digits={n_digits}; increase width/height"
        )


def _validate_digits(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 3 or images.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE):
        raise ValueError(f"images must have shape (N, 28, 28), got {images.shape}")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.floating) or images.size and not (
            images.min() >= 0 and images.max() <= 1
        ):
            raise ValueError(f"images must be uint8 in 0..255 or floats in [0, 1], got {images.dtype}")
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be integers of shape ({len(images)},) to match images, "
            f"got {labels.dtype} {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise ValueError(f"labels must lie in 0..{N_CLASSES - 1}, found {labels.min()}..{labels.max()}")
    absent = sorted(set(range(N_CLASSES)) - set(np.unique(labels).tolist()))
    if absent:
        # The target is uniform over the 10 classes and needs digits of its class.
        raise ValueError(f"labels must contain every class 0..{N_CLASSES - 1}; missing {absent}")
    return images, labels


# --------------------------------------------------------------------------
# The generator's random draws (make_mnist.py: _get_numbers, _get_positions, _create_noise)


def _get_numbers(rng: np.random.RandomState, n: int, labels: np.ndarray, n_digits: int,
                 n_positive: int) -> tuple[np.ndarray, np.ndarray]:
    """Digit indices (n, n_digits), positives first, and targets (n,), both int64."""
    all_idxs = np.arange(len(labels))
    # Same arrays as the original's all_idxs[y == target] / [y != target],
    # computed once per class instead of once per image.
    positives = [all_idxs[labels == t] for t in range(N_CLASSES)]
    negatives = [all_idxs[labels != t] for t in range(N_CLASSES)]
    nums = np.empty((n, n_digits), dtype=np.int64)
    targets = np.empty(n, dtype=np.int64)
    for i in range(n):
        target = int(rng.rand() * N_CLASSES)
        # choice() samples WITH replacement, as in the original: a digit image
        # can repeat, and the negatives may share a class.
        nums[i, :n_positive] = rng.choice(positives[target], n_positive)
        nums[i, n_positive:] = rng.choice(negatives[target], n_digits - n_positive)
        targets[i] = target
    return nums, targets


def _get_positions(rng: np.random.RandomState, n: int, width: int, height: int,
                   n_digits: int) -> np.ndarray:
    """Top-left (row, col) of every digit, (n, n_digits, 2) int64, without overlaps.

    Two digits overlap when |drow| < 28 and |dcol| < 28; an overlapping draw is
    rejected and redrawn. The retries are bounded so that a geometry that
    cannot be completed (a crowded image) raises instead of looping forever.
    """
    span = np.array([height - DIGIT_SIZE, width - DIGIT_SIZE])
    positions = np.empty((n, n_digits, 2), dtype=np.int64)
    for i in range(n):
        placed: list[tuple[int, int]] = []
        for k in range(n_digits):
            for _ in range(MAX_POSITION_TRIES):
                r, c = np.round(rng.rand(2) * span).astype(int)
                if not any(abs(r - pr) < DIGIT_SIZE and abs(c - pc) < DIGIT_SIZE for pr, pc in placed):
                    break
            else:
                raise ValueError(
                    f"could not place digit {k + 1} of n_digits={n_digits} without overlap in "
                    f"image {i} after {MAX_POSITION_TRIES} draws: a {height}x{width} image "
                    f"(height x width) is too crowded; increase width/height or lower n_digits"
                )
            placed.append((int(r), int(c)))
        positions[i] = placed
    return positions


def make_noise_patterns(rng: np.random.RandomState) -> np.ndarray:
    """The shared bank of noise patterns, float32 (50, 28, 28) in {0} U [0.8, 1.0).

    Each pattern is the union of two straight lines through the corner: line
    A[i] (slope tan(U*pi/2.5), angles in [0, 72) degrees, drawn with 56
    rounded points) and a line B[i] taken from a shuffled copy of A, possibly
    flipped, times per-pixel intensities U(0.8, 1.0).
    """
    m = N_NOISE_PATTERNS
    slopes = np.tan(rng.rand(m) * np.pi / 2.5)
    A = np.zeros((m, DIGIT_SIZE, DIGIT_SIZE))
    for i in range(m):
        # The original computes min(27.49, 27.49/slope); slope == 0 (rand()
        # returning exactly 0.0) would divide by zero, with the same result.
        x_max = min(27.49, 27.49 / slopes[i]) if slopes[i] > 0 else 27.49
        x = np.linspace(0, x_max, 2 * DIGIT_SIZE)
        y = slopes[i] * x
        A[i, np.round(x).astype(int), np.round(y).astype(int)] = 1.0
    B = np.array(A)
    rng.shuffle(B)
    flip_x = rng.rand(m) < 0.33
    flip_y = rng.rand(m) < 0.33
    # Quirk kept from the original: both flags flip axis 2, so a pattern with
    # both flags set is flipped twice, i.e. not at all.
    B[flip_x] = np.flip(B[flip_x], 2)
    B[flip_y] = np.flip(B[flip_y], 2)
    noise = ((A + B) > 0).astype(np.float64)
    noise *= rng.rand(m, DIGIT_SIZE, DIGIT_SIZE) * 0.2 + 0.8
    return noise.astype(np.float32)


def _place_noise(rng: np.random.RandomState, n: int, width: int, height: int,
                 n_noise: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise top-left corners (n, n_noise, 2) in [28, size-28) and pattern ids (n, n_noise).

    As in the original, all positions of all images are drawn in one call,
    then all pattern ids in a second one (not interleaved per image).
    """
    span = np.array([height - 2 * DIGIT_SIZE, width - 2 * DIGIT_SIZE])
    positions = (rng.rand(n, n_noise, 2) * span + DIGIT_SIZE).astype(np.int64)
    patterns = (rng.rand(n, n_noise) * N_NOISE_PATTERNS).astype(np.int64)
    return positions, patterns


def _rescale(img: np.ndarray, scale: float) -> np.ndarray:
    """One 28x28 object in [0, 1] to its low-resolution uint8 block (round(28*s) pixels a side)."""
    from skimage.transform import rescale  # deferred: scipy.ndimage costs ~0.2 s to import

    small = rescale(img, scale, order=1, mode="constant", anti_aliasing=True, channel_axis=None)
    return (255 * small).astype(np.uint8)  # truncating cast, as in the original


def _paste(canvas: np.ndarray, block: np.ndarray, r: int, c: int) -> None:
    """Overwrite ``canvas[r:, c:]`` with ``block``, cropped at the bottom/right border.

    The original's slices would fail on a low-resolution block that sticks out
    by a pixel (possible for some scales: int(r*s) + round(28*s) > int(H*s));
    we crop instead. In the high-resolution image blocks always fit.
    """
    h = min(block.shape[0], canvas.shape[0] - r)
    w = min(block.shape[1], canvas.shape[1] - c)
    canvas[r:r + h, c:c + w] = block[:h, :w]


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
    ``x_high`` uint8 tensor (1, H, W) in 0..255, ``y`` int64 scalar tensor
    (the target class).

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
                 train: bool = True) -> None:
        _validate_geometry(width, height, scale, noise, n_noise, n_digits, n_positive)
        if not _is_int(n_samples) or n_samples < 0:
            raise ValueError(f"n_samples must be an integer >= 0, got {n_samples!r}")
        _validate_seed(seed, offset=int(train))
        self.images, self.labels = _validate_digits(images, labels)
        self.width, self.height, self.scale = int(width), int(height), float(scale)
        self.noise, self.n_noise = bool(noise), int(n_noise)
        self.n_digits, self.n_positive = int(n_digits), int(n_positive)
        self.seed, self.train = int(seed), bool(train)

        # The RNG calls of make_mnist.py, in its order: numbers, positions, noise.
        rng = np.random.RandomState(self.seed + int(self.train))
        self.digit_indices, self.targets = _get_numbers(rng, n_samples, self.labels, n_digits, n_positive)
        self.positions = _get_positions(rng, n_samples, self.width, self.height, n_digits)
        # Drawn even when noise is off so that the stream (and the data) agree.
        self.noise_patterns = make_noise_patterns(rng)
        self.noise_positions, self.noise_ids = _place_noise(rng, n_samples, self.width, self.height, n_noise)

        # Shared by all images, so computed once: high- and low-res noise blocks.
        self._noise_high = (self.noise_patterns * 255).astype(np.uint8)
        self._noise_low = [_rescale(p, self.scale) for p in self.noise_patterns]

    @classmethod
    def from_config(cls, config: MegaMNISTConfig, images: np.ndarray, labels: np.ndarray,
                    train: bool) -> "MegapixelMNIST":
        """The train (``n_train`` images) or test (``n_test``) set of ``config``."""
        return cls(images, labels, n_samples=config.n_train if train else config.n_test,
                   width=config.width, height=config.height, scale=config.scale,
                   noise=config.noise, n_noise=config.n_noise, n_digits=config.n_digits,
                   n_positive=config.n_positive, seed=config.seed, train=train)

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
            _paste(img, _rescale(self._digit(j), s), int(r * s), int(c * s))
        if self.noise:
            for (r, c), k in zip(self.noise_positions[i], self.noise_ids[i]):
                _paste(img, self._noise_low[k], int(r * s), int(c * s))
        return img

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x_low = self.render_low(i).astype(np.float32) / 255.0
        x_high = self.render_high(i)
        return {
            "x_low": torch.from_numpy(x_low[None]),
            "x_high": torch.from_numpy(x_high[None]),
            "y": torch.tensor(int(self.targets[self._index(i)]), dtype=torch.int64),
        }

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
    return train, test
