"""The Megapixel MNIST generator: the random draws of the original ``make_mnist.py`` and the rendering helpers.

The draws follow ``scripts/make_mnist.py`` of idiap/attention-sampling with
the same RNG calls in the same order and shapes, so that for the paper's
settings the digit choices, positions and noise are those of the original
dataset (docs/tasks/mega_mnist.md, "The generator"). Coordinates are
(row, col) top-left corners in high-resolution pixels.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "DIGIT_SIZE",
    "MAX_POSITION_TRIES",
    "N_CLASSES",
    "N_NOISE_PATTERNS",
    "get_numbers",
    "get_positions",
    "is_int",
    "make_noise_patterns",
    "paste",
    "place_noise",
    "rescale_object",
    "validate_digits",
    "validate_geometry",
    "validate_seed",
]

DIGIT_SIZE = 28  #: side of an MNIST digit and of a noise pattern, in pixels
N_CLASSES = 10  #: the target is drawn as int(rand() * 10)
N_NOISE_PATTERNS = 50  #: size of the shared bank of noise patterns (fixed in the original)
MAX_POSITION_TRIES = 10_000  #: redraws allowed per digit before giving up (see get_positions)


# --------------------------------------------------------------------------
# Validation of the settings


def is_int(v: object) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def validate_seed(seed: object, offset: int) -> None:
    """``seed`` and ``seed + offset`` (the RNG seed used) must be valid ``RandomState`` seeds."""
    if not is_int(seed) or seed < 0 or seed + offset >= 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32 - {1 + offset}], got {seed!r}")


def validate_geometry(width: int, height: int, scale: float, noise: bool, n_noise: int,
                      n_digits: int, n_positive: int) -> None:
    """Check the settings that do not depend on the digit arrays."""
    for name, value in (("width", width), ("height", height)):
        if not is_int(value) or value < DIGIT_SIZE:
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
    if not is_int(n_noise) or n_noise < 0:
        raise ValueError(f"n_noise must be an integer >= 0, got {n_noise!r}")
    if not is_int(n_digits) or n_digits < 1:
        raise ValueError(f"n_digits must be an integer >= 1, got {n_digits!r}")
    if not is_int(n_positive) or not 1 <= n_positive <= n_digits or 2 * n_positive <= n_digits:
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


def validate_digits(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The digit arrays as numpy arrays, checked: (N, 28, 28) images, labels covering 0..9."""
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


def get_numbers(rng: np.random.RandomState, n: int, labels: np.ndarray, n_digits: int,
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


def get_positions(rng: np.random.RandomState, n: int, width: int, height: int,
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


def place_noise(rng: np.random.RandomState, n: int, width: int, height: int,
                n_noise: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise top-left corners (n, n_noise, 2) in [28, size-28) and pattern ids (n, n_noise).

    As in the original, all positions of all images are drawn in one call,
    then all pattern ids in a second one (not interleaved per image).
    """
    span = np.array([height - 2 * DIGIT_SIZE, width - 2 * DIGIT_SIZE])
    positions = (rng.rand(n, n_noise, 2) * span + DIGIT_SIZE).astype(np.int64)
    patterns = (rng.rand(n, n_noise) * N_NOISE_PATTERNS).astype(np.int64)
    return positions, patterns


def rescale_object(img: np.ndarray, scale: float) -> np.ndarray:
    """One 28x28 object in [0, 1] to its low-resolution uint8 block (round(28*s) pixels a side)."""
    from skimage.transform import (
        rescale,  # deferred: scipy.ndimage costs ~0.2 s to import
    )

    small = rescale(img, scale, order=1, mode="constant", anti_aliasing=True, channel_axis=None)
    return (255 * small).astype(np.uint8)  # truncating cast, as in the original


def paste(canvas: np.ndarray, block: np.ndarray, r: int, c: int) -> None:
    """Overwrite ``canvas[r:, c:]`` with ``block``, cropped at the bottom/right border.

    The original's slices would fail on a low-resolution block that sticks out
    by a pixel (possible for some scales: int(r*s) + round(28*s) > int(H*s));
    we crop instead. In the high-resolution image blocks always fit.
    """
    h = min(block.shape[0], canvas.shape[0] - r)
    w = min(block.shape[1], canvas.shape[1] - c)
    canvas[r:r + h, c:c + w] = block[:h, :w]
