"""Resizing and augmentations shared by the real-image tasks.

Conventions used throughout:

* Images are torch tensors, channels first: ``(C, H, W)`` (resizing accepts
  any leading dimensions ``(..., H, W)``). ``H`` is the first spatial axis.
* ``uint8`` images hold values ``0..255`` that stand for ``v / 255``; floating
  images are on the ``[0, 1]`` scale (augmentations such as ``a*x + b`` may
  leave it slightly, on purpose: the original did not clip).
  :func:`as_float_image` converts the former into the latter.
* Randomness never comes from a global state: every augmentation takes a
  ``numpy.random.Generator`` and draws the same number of values whatever the
  outcome, so that the stream (and hence every later draw) does not depend on
  whether an earlier augmentation fired. Datasets make one generator per item
  with :func:`item_rng` from ``(seed, epoch, index)``, which makes the data
  reproducible and independent of the number of DataLoader workers.

Bilinear resizing offers the two sampling conventions that matter for
reproducing the original (docs/tasks/speed_limits.md, "Low-resolution view"):
TF1's ``asymmetric`` coordinates (``tf.image.resize_images``,
``align_corners=False``, no half-pixel centres) and the ``half_pixel``
coordinates of PyTorch's ``F.interpolate`` and TF2. Neither anti-aliases.
Reading image files is :mod:`ats.data.images`.
"""

from __future__ import annotations

from typing import Literal, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "COORDINATES",
    "Augmentation",
    "ColorJitter",
    "ImageLinearTransform",
    "ImagePan",
    "RandomDihedral",
    "apply_augmentations",
    "as_float_image",
    "dihedral",
    "hsv_to_rgb",
    "item_rng",
    "linear_transform",
    "pan",
    "resize_bilinear",
    "rgb_to_hsv",
    "scaled_size",
]

Coordinates = Literal["asymmetric", "half_pixel"]
#: The accepted values of ``coordinates`` in :func:`resize_bilinear`.
COORDINATES: tuple[str, ...] = ("asymmetric", "half_pixel")


# --------------------------------------------------------------------------- randomness


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one item's augmentations: ``default_rng((seed, epoch, index))``.

    All three must be integers >= 0 (numpy's seed sequences reject negatives).
    """
    for name, value in (("seed", seed), ("epoch", epoch), ("index", index)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return np.random.default_rng((int(seed), int(epoch), int(index)))


# --------------------------------------------------------------------------- dtype and resizing


def as_float_image(x: Tensor) -> Tensor:
    """``uint8`` (values 0..255) -> ``float32`` in [0, 1]; floating -> ``float32`` unchanged in value."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    if x.is_floating_point():
        return x.to(torch.float32)
    raise ValueError(f"image must be uint8 or floating point, got dtype {x.dtype}")


def scaled_size(size: Sequence[int], scale: float) -> tuple[int, int]:
    """``(int(H * scale), int(W * scale))``, the low-view size rule of the original scripts."""
    if len(size) != 2:
        raise ValueError(f"size must be (H, W), got {tuple(size)!r}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    h, w = int(size[0] * scale), int(size[1] * scale)
    if h < 1 or w < 1:
        raise ValueError(f"scale {scale} maps size {tuple(size)} to {(h, w)}: "
                         "every side must stay >= 1 pixel")
    return h, w


def _axis_taps(n_in: int, n_out: int, coordinates: str, dtype: torch.dtype,
               device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """For each output index along one axis: the two input indices and the weight of the second.

    ``asymmetric``: ``src = dst * n_in / n_out`` (TF1 ``resize_bilinear``,
    ``align_corners=False``, ``half_pixel_centers=False``).
    ``half_pixel``: ``src = max((dst + 0.5) * n_in / n_out - 0.5, 0)``
    (``F.interpolate(mode="bilinear", align_corners=False)``).
    In both, ``i0 = floor(src)``, ``i1 = min(i0 + 1, n_in - 1)``, weight ``src - i0``.
    """
    scale = n_in / n_out
    dst = torch.arange(n_out, dtype=torch.float64, device=device)
    src = dst * scale if coordinates == "asymmetric" else ((dst + 0.5) * scale - 0.5).clamp(min=0.0)
    i0 = src.floor().clamp(max=n_in - 1)
    w1 = (src - i0).to(dtype)
    i0 = i0.long()
    i1 = (i0 + 1).clamp(max=n_in - 1)
    return i0, i1, w1


def resize_bilinear(x: Tensor, size: Sequence[int], coordinates: Coordinates = "asymmetric") -> Tensor:
    """Bilinear resize of the last two axes, without anti-aliasing.

    Args:
        x: image(s) ``(..., H, W)``; ``uint8``/integer input is computed in
            float32 with its values unchanged (no division by 255; use
            :func:`as_float_image` first for the [0, 1] scale).
        size: output ``(h, w)`` in pixels.
        coordinates: ``"asymmetric"`` (default, TF1 as used by the original
            speed-limits script) or ``"half_pixel"`` (PyTorch, TF2).

    Returns:
        ``(..., h, w)``, floating (float32 for non-floating input).
    """
    if coordinates not in COORDINATES:
        raise ValueError(f"coordinates must be one of {COORDINATES}, got {coordinates!r}")
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise ValueError(f"x must be a tensor (..., H, W) with >= 2 dims, got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ValueError(f"size must be two positive integers (h, w), got {tuple(size)!r}")
    if not x.is_floating_point():
        x = x.to(torch.float32)
    h_in, w_in = x.shape[-2:]
    if h_in < 1 or w_in < 1:
        raise ValueError(f"cannot resize an empty image of spatial size {(h_in, w_in)}")
    h, w = int(size[0]), int(size[1])
    # Separable: columns first then rows, in TF's `a + (b - a) * t` form.
    j0, j1, wx = _axis_taps(w_in, w, coordinates, x.dtype, x.device)
    left, right = x.index_select(-1, j0), x.index_select(-1, j1)
    cols = left + (right - left) * wx
    i0, i1, wy = _axis_taps(h_in, h, coordinates, x.dtype, x.device)
    top, bottom = cols.index_select(-2, i0), cols.index_select(-2, i1)
    return top + (bottom - top) * wy[:, None]


# --------------------------------------------------------------------------- augmentations


class Augmentation(Protocol):
    """An image augmentation: ``aug(x (C, H, W), rng) -> (C, H', W')``."""

    def __call__(self, x: Tensor, rng: np.random.Generator) -> Tensor: ...


def apply_augmentations(x: Tensor, augmentations: Sequence[Augmentation],
                        rng: np.random.Generator) -> Tensor:
    """Apply ``augmentations`` in order, all drawing from the one generator ``rng``."""
    for aug in augmentations:
        x = aug(x, rng)
    return x


def _check_range(name: str, r: Sequence[float]) -> tuple[float, float]:
    if len(r) != 2 or not r[0] <= r[1]:
        raise ValueError(f"{name} must be a (low, high) pair with low <= high, got {tuple(r)!r}")
    return float(r[0]), float(r[1])


def _check_p(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    return float(p)


def _require_float(x: Tensor, who: str) -> None:
    if not x.is_floating_point():
        raise ValueError(f"{who} expects a floating image on the [0, 1] scale, got dtype {x.dtype}; "
                         "convert uint8 images with as_float_image first")


def linear_transform(x: Tensor, a: float, b: float) -> Tensor:
    """``a * x + b`` on a floating image, without clipping (as the original)."""
    _require_float(x, "linear_transform")
    return x * a + b


class ImageLinearTransform:
    """With probability ``p``: ``x -> a * x + b``, ``a ~ U(a_range)``, ``b ~ U(b_range)``, one (a, b) per image.

    The original Keras layer of the speed-limits script (defaults
    ``a_range=(0.8, 1.2)``, ``b_range=(-0.1, 0.1)``, ``p=0.8``), no clipping.
    Draws (in order) the Bernoulli, ``a`` and ``b`` every call.
    """

    def __init__(self, a_range: Sequence[float] = (0.8, 1.2), b_range: Sequence[float] = (-0.1, 0.1),
                 p: float = 0.8) -> None:
        self.a_range = _check_range("a_range", a_range)
        self.b_range = _check_range("b_range", b_range)
        self.p = _check_p(p)

    def __call__(self, x: Tensor, rng: np.random.Generator) -> Tensor:
        _require_float(x, "ImageLinearTransform")
        apply = rng.random() < self.p
        a = rng.uniform(*self.a_range)
        b = rng.uniform(*self.b_range)
        return linear_transform(x, a, b) if apply else x

    def __repr__(self) -> str:
        return f"ImageLinearTransform(a_range={self.a_range}, b_range={self.b_range}, p={self.p})"


def pan(x: Tensor, dy: int, dx: int) -> Tensor:
    """Shift the image content by ``dy`` rows down and ``dx`` columns right, zero fill.

    ``out[..., r, c] = x[..., r - dy, c - dx]`` where that is inside the image,
    else 0. So ``dx > 0`` zeroes the first ``dx`` columns (left border) and
    ``dx < 0`` the last ``-dx`` (right border); likewise for rows. Any dtype.
    """
    dy, dx = int(dy), int(dx)
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


class ImagePan:
    """With probability ``p``: translate by ``(dy, dx)``, each ``round(U(-delta, delta))`` px, zero fill.

    The original Keras layer ``ImagePan`` (``tf.contrib.image.translate`` with
    nearest interpolation, so the shift is an integer number of pixels; the
    continuous draw rounded to the nearest integer matches its distribution).
    ``horizontally``/``vertically`` enable the x/y shifts; the speed-limits
    script enables both, with ``delta=100``, ``p=0.8``. One Bernoulli for the
    pan, independent shifts per axis; draws the Bernoulli, ``dy``, ``dx`` every call.
    """

    def __init__(self, delta: float = 100, horizontally: bool = True, vertically: bool = True,
                 p: float = 0.8) -> None:
        if not delta >= 0:
            raise ValueError(f"delta must be >= 0 pixels, got {delta!r}")
        self.delta = float(delta)
        self.horizontally, self.vertically = bool(horizontally), bool(vertically)
        self.p = _check_p(p)

    def sample(self, rng: np.random.Generator) -> tuple[int, int] | None:
        """The shift ``(dy, dx)`` of one call, or None when the pan is not applied."""
        apply = rng.random() < self.p
        dy = int(np.rint(rng.uniform(-self.delta, self.delta)))
        dx = int(np.rint(rng.uniform(-self.delta, self.delta)))
        if not apply:
            return None
        return (dy if self.vertically else 0, dx if self.horizontally else 0)

    def __call__(self, x: Tensor, rng: np.random.Generator) -> Tensor:
        shift = self.sample(rng)
        return x if shift is None else pan(x, *shift)

    def __repr__(self) -> str:
        return (f"ImagePan(delta={self.delta}, horizontally={self.horizontally}, "
                f"vertically={self.vertically}, p={self.p})")


def dihedral(x: Tensor, k: int) -> Tensor:
    """One of the 8 symmetries of the square: ``k`` in 0..7.

    ``k % 4`` counter-clockwise quarter turns of the last two axes, preceded by
    a left-right flip when ``k >= 4``. Non-square images swap H and W on odd turns.
    """
    if not 0 <= int(k) < 8:
        raise ValueError(f"k must be in 0..7, got {k!r}")
    k = int(k)
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x


class RandomDihedral:
    """A uniformly random one of the 8 flips/quarter-turns (for images without an orientation)."""

    def __call__(self, x: Tensor, rng: np.random.Generator) -> Tensor:
        return dihedral(x, int(rng.integers(8)))

    def __repr__(self) -> str:
        return "RandomDihedral()"


def rgb_to_hsv(x: Tensor) -> Tensor:
    """RGB ``(..., 3, H, W)`` in [0, 1] -> HSV with hue in [0, 1) (skimage's convention)."""
    r, g, b = x.unbind(-3)
    maxc = x.amax(-3)
    minc = x.amin(-3)
    chroma = maxc - minc
    flat = chroma == 0
    ones = torch.ones_like(maxc)
    s = chroma / torch.where(maxc == 0, ones, maxc)
    c = torch.where(flat, ones, chroma)  # avoids 0/0 where the hue is undefined (set to 0)
    rc, gc, bc = (maxc - r) / c, (maxc - g) / c, (maxc - b) / c
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    is_b = ~is_r & ~is_g
    h = is_r * (bc - gc) + is_g * (2.0 + rc - bc) + is_b * (4.0 + gc - rc)
    h = torch.remainder(h / 6.0, 1.0)
    h = torch.where(flat, torch.zeros_like(h), h)
    return torch.stack((h, s, maxc), dim=-3)


def hsv_to_rgb(x: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv` (hue taken modulo 1)."""
    h, s, v = x.unbind(-3)
    h6 = torch.remainder(h, 1.0) * 6.0
    i = torch.floor(h6)
    f = h6 - i
    i = i.long() % 6
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    # For sector i, (r, g, b) picks from (v, q, p, t) as in the textbook table.
    table = torch.stack((v, q, p, t), dim=0)
    sel = torch.tensor([[0, 3, 2], [1, 0, 2], [2, 0, 3], [2, 1, 0], [3, 2, 0], [0, 2, 1]],
                       device=x.device)[i]  # (..., H, W, 3)
    rgb = torch.gather(table, 0, sel.movedim(-1, 0))  # (3, ..., H, W)
    return rgb.movedim(0, -3)


def _grayscale(x: Tensor) -> Tensor:
    """ITU-R 601 luma ``(..., 1, H, W)``, torchvision's weights."""
    r, g, b = x.unbind(-3)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


class ColorJitter:
    """Random brightness, contrast, saturation and hue, in a random order (torchvision's semantics).

    Factors are drawn from ``U(max(0, 1 - v), 1 + v)`` for brightness, contrast
    and saturation, the hue shift from ``U(-hue, hue)`` (fraction of a turn,
    ``hue <= 0.5``). Each step blends and clips to [0, 1]: brightness scales
    ``x``; contrast blends with the image's mean luma; saturation with the
    per-pixel luma; hue rotates the HSV hue. Input: float RGB ``(3, H, W)`` in
    [0, 1]. Draws the order (a permutation of 4) and the four values every call.
    """

    def __init__(self, brightness: float = 0.1, contrast: float = 0.1, saturation: float = 0.1,
                 hue: float = 0.1) -> None:
        for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not v >= 0:
                raise ValueError(f"{name} must be >= 0, got {v!r}")
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5] (a fraction of a turn), got {hue!r}")
        self.brightness, self.contrast = float(brightness), float(contrast)
        self.saturation, self.hue = float(saturation), float(hue)

    def __call__(self, x: Tensor, rng: np.random.Generator) -> Tensor:
        _require_float(x, "ColorJitter")
        if x.shape[-3] != 3:
            raise ValueError(f"ColorJitter expects RGB images (3, H, W), got shape {tuple(x.shape)}")
        order = rng.permutation(4)
        fb = rng.uniform(max(0.0, 1 - self.brightness), 1 + self.brightness)
        fc = rng.uniform(max(0.0, 1 - self.contrast), 1 + self.contrast)
        fs = rng.uniform(max(0.0, 1 - self.saturation), 1 + self.saturation)
        dh = rng.uniform(-self.hue, self.hue)
        for op in order:
            if op == 0 and self.brightness > 0:
                x = (x * fb).clamp(0.0, 1.0)
            elif op == 1 and self.contrast > 0:
                mean = _grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
                x = (fc * x + (1 - fc) * mean).clamp(0.0, 1.0)
            elif op == 2 and self.saturation > 0:
                x = (fs * x + (1 - fs) * _grayscale(x)).clamp(0.0, 1.0)
            elif op == 3 and self.hue > 0:
                hsv = rgb_to_hsv(x)
                hsv = torch.cat((torch.remainder(hsv[..., :1, :, :] + dh, 1.0), hsv[..., 1:, :, :]), dim=-3)
                x = hsv_to_rgb(hsv)
        return x

    def __repr__(self) -> str:
        return (f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation}, hue={self.hue})")
