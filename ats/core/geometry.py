"""Sample index -> high-resolution patch offset (docs/geometry.md, "Offsets from
samples").

The attention grid of ``sample_space`` cells is laid over a region of the
low-resolution image: by default all of it minus a margin of half the
attention network's receptive field on each side (the centre of a "valid"
convolution's receptive field). Each sampled cell's centre is mapped to
high-resolution pixels, and the patch is centred on it. Per spatial dim::

    scale = high / low                    # high px per low px
    space = extent * scale                # region covered by the grid, high px
    step  = space / sample_space          # high px per grid cell
    start = round(origin * scale + s * step + step / 2 - patch / 2)

with ``origin = rf / 2`` and ``extent = low - rf`` by default, rounded half
to even (like the original's ``tf.round``: 30.5 -> 30) **on the exact
rational value**: when samples, origin and extent are multiples of 1/2 (always
in ``AttentionSampling``) the start is computed in int64 as a fraction and
ties are decided exactly, whatever the device; otherwise (sub-cell float
samples) in float64 (docs/geometry.md, "Rounding"). Passing
``origin``/``extent`` explicitly gives nested sampling: the origin of a
previous patch and its size, in ``low`` pixels.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["as_patch_size", "patch_offsets"]

Size = int | Sequence[int]
Coord = float | Sequence[float] | torch.Tensor


def patch_offsets(
    samples: torch.Tensor,
    sample_space: Size,
    low_shape: Sequence[int],
    high_shape: Sequence[int],
    patch_size: Size,
    receptive_field: Size = 0,
    *,
    origin: Coord | None = None,
    extent: Coord | None = None,
) -> torch.Tensor:
    """Top-left offsets in high-resolution pixels of the patches for ``samples``.

    Args:
        samples: ``(B, N, d)`` sampled cell indices in the attention grid
            (integers, or floats for sub-cell positions).
        sample_space: the attention grid's shape, ``d`` ints (or one int).
        low_shape: spatial shape of the low-resolution view, ``d`` ints; or a
            ``(B, d)`` integer tensor, one shape per item: the part of a
            padded ``x_low`` that shows item b's image (docs/sources.md,
            "Images of different sizes"; pass ``extent`` then).
        high_shape: spatial shape of the high-resolution image, ``d`` ints;
            or a ``(B, d)`` integer tensor, each item's own image.
        patch_size: patch shape in high-resolution pixels, ``d`` ints or one.
        receptive_field: of the attention network, in low pixels (one int or
            ``d``); 0 for ``padding="same"`` networks.
        origin: where the grid starts, in low pixels; default
            ``receptive_field / 2``. A ``d``-sequence or a tensor broadcastable
            to ``(B, N, d)`` (e.g. previous patches' offsets for nested
            sampling).
        extent: the size of the region the grid covers, in low pixels; default
            ``low_shape - receptive_field``. Same forms as ``origin``.

    Returns:
        ``(B, N, d)`` int64 offsets on ``samples``' device, ready for
        :func:`ats.core.extract.extract_patches`.
    """
    if not isinstance(samples, torch.Tensor):
        raise TypeError(f"samples must be a torch.Tensor, got {type(samples).__name__}")
    if samples.ndim != 3:
        raise ValueError(f"samples must have shape (B, N, d), got {tuple(samples.shape)}")
    if samples.dtype.is_complex or samples.dtype == torch.bool:
        raise TypeError(f"samples must be integer or real, got dtype {samples.dtype}")
    d = samples.shape[-1]
    if not 1 <= d <= 3:
        raise ValueError(f"samples' last dim must be 1 to 3 spatial dims, got {d}")
    dev = samples.device

    space_n = _ints("sample_space", sample_space, d, scalar_ok=True, minimum=1)
    low = _shape("low_shape", low_shape, samples)
    high = _shape("high_shape", high_shape, samples)
    patch = _ints("patch_size", patch_size, d, scalar_ok=True, minimum=1)
    rf = _ints("receptive_field", receptive_field, d, scalar_ok=True, minimum=0)
    low_rows = low.tolist() if isinstance(low, torch.Tensor) else [low]
    if any(r >= lo for row in low_rows for r, lo in zip(rf, row)):
        raise ValueError(f"receptive_field {tuple(rf)} must be smaller than low_shape "
                         f"{tuple(low) if isinstance(low, list) else low_rows}")
    if isinstance(low, torch.Tensor) or isinstance(high, torch.Tensor):
        # one shape per item: (B, 1, d) on samples' device
        low, high = (t.to(dev).unsqueeze(1) if isinstance(t, torch.Tensor) else
                     torch.tensor(t, device=dev) for t in (low, high))

    origin_t = _coord("origin", origin, d, dev) if origin is not None else \
        torch.tensor(rf, dtype=torch.float64, device=dev) / 2
    extent_t = _coord("extent", extent, d, dev) if extent is not None else \
        (low - torch.tensor(rf, device=dev) if isinstance(low, torch.Tensor) else
         torch.tensor([lo - r for lo, r in zip(low, rf)], device=dev))
    halves = [_twice_as_int(t) for t in (samples, origin_t, extent_t)]
    if all(h is not None for h in halves):
        return _exact_starts(*halves, space_n, low, high, patch)  # type: ignore[arg-type]

    # Sub-cell float positions: float64, then half to even.
    def f64(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64, device=dev)

    scale = torch.as_tensor(high, dtype=torch.float64, device=dev) / \
        torch.as_tensor(low, dtype=torch.float64, device=dev)
    step = extent_t.to(torch.float64) * scale / f64(space_n)
    start = (origin_t.to(torch.float64) * scale + samples.to(torch.float64) * step + step / 2
             - f64(patch) / 2)
    return torch.round(start).to(torch.int64)


def _twice_as_int(t: torch.Tensor) -> torch.Tensor | None:
    """``2 t`` as int64 when every value of ``t`` is a multiple of 1/2 (and
    small enough for exact arithmetic), else None."""
    if not t.is_floating_point():
        return t.to(torch.int64) * 2
    t2 = t.to(torch.float64) * 2
    if t2.numel() and not bool(((t2 == torch.round(t2)) & (t2.abs() < 2.0**40)).all()):
        return None
    return t2.to(torch.int64)


def _exact_starts(s2: torch.Tensor, o2: torch.Tensor, e2: torch.Tensor, space: list[int],
                  low: list[int] | torch.Tensor, high: list[int] | torch.Tensor,
                  patch: list[int]) -> torch.Tensor:
    """``round(o H/L + (s + 1/2) e H/(L S) - P/2)``, half to even, exactly.

    With ``s2 = 2s``, ``o2 = 2o``, ``e2 = 2e`` integers, the start is
    ``num / den`` with ``num = 2 S H o2 + (s2 + 1) e2 H - 2 P L S`` and
    ``den = 4 L S``, both int64; the quotient is rounded half to even.
    ``low`` and ``high`` are ``d`` ints or int64 (B, 1, d), one row per item.
    """
    def i64(values: list[int] | torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(values, dtype=torch.int64, device=s2.device)

    S, L, H, P = i64(space), i64(low), i64(high), i64(patch)
    num = 2 * S * H * o2 + (s2 + 1) * e2 * H - 2 * P * L * S
    den = 4 * L * S
    q = torch.div(num, den, rounding_mode="floor")
    twice_r = 2 * (num - q * den)  # 2 * remainder, in [0, 2 den)
    up = (twice_r > den) | ((twice_r == den) & (q % 2 == 1))
    return q + up.to(torch.int64)


def as_patch_size(patch_size: object, dims: int | None = None) -> int | tuple[int, ...]:
    """The one check of a patch size: an int (every dim) or 1 to 3 positive ints.

    Args:
        patch_size: an int, or a sequence (list, tuple, array, tensor) of ints.
        dims: the number of spatial dims it is for; ``None`` keeps the
            user's form (an int stays an int).

    Returns:
        ``patch_size`` normalised: a tuple of ``dims`` ints when ``dims`` is
        given, else the int or a tuple.

    Raises:
        TypeError: not an int or a sequence of ints.
        ValueError: a non-positive entry, or a length other than ``dims`` (or
            than 1 to 3).
    """
    if _is_int(patch_size):
        size: int | tuple[int, ...] = int(patch_size)  # type: ignore[call-overload]
        items: tuple[int, ...] = (size,) * (dims or 1)  # type: ignore[operator]
    elif isinstance(patch_size, (Sequence, np.ndarray, torch.Tensor)) and not isinstance(
        patch_size, (str, bytes)
    ):
        raw = list(patch_size.tolist() if hasattr(patch_size, "tolist") else patch_size)
        if not all(_is_int(p) for p in raw):
            raise TypeError(f"patch_size must be an int or a sequence of ints, got {patch_size!r}")
        items = size = tuple(int(p) for p in raw)
        if dims is not None and len(items) != dims:
            raise ValueError(
                f"patch_size must have one entry per spatial dim of x ({dims}), got "
                f"{len(items)}: {items}"
            )
        if not 1 <= len(items) <= 3:
            raise ValueError(f"patch_size must have 1 to 3 entries, got {items}")
    else:
        raise TypeError(
            f"patch_size must be an int or a sequence of ints, got {type(patch_size).__name__}"
        )
    if any(p <= 0 for p in items):
        raise ValueError(f"patch_size must be positive, got {size if dims is None else items}")
    return items if dims is not None else size


def _ints(name: str, value: object, d: int, *, scalar_ok: bool, minimum: int) -> list[int]:
    """``value`` as ``d`` ints >= ``minimum`` (a scalar repeats when ``scalar_ok``)."""
    if scalar_ok and _is_int(value):
        value = (value,) * d
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        expected = f"an int or {d} ints" if scalar_ok else f"{d} ints"
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    if len(value) != d or not all(_is_int(v) for v in value):
        raise ValueError(f"{name} must be {d} ints (one per spatial dim), got {tuple(value)}")
    if any(v < minimum for v in value):
        raise ValueError(f"{name} must be >= {minimum}, got {tuple(value)}")
    return [int(v) for v in value]


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _shape(name: str, value: object, samples: torch.Tensor) -> list[int] | torch.Tensor:
    """``d`` ints (a list), or a (B, d) integer tensor, one shape per item
    (checked where it is, as int64); every entry >= 1."""
    B, _, d = samples.shape
    if not isinstance(value, torch.Tensor):
        return _ints(name, value, d, scalar_ok=False, minimum=1)
    if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool \
            or tuple(value.shape) != (B, d):
        raise ValueError(f"{name} as a tensor must hold one shape per item, (B={B}, d={d}) "
                         f"integers, got {value.dtype} {tuple(value.shape)}")
    if bool((value < 1).any()):
        raise ValueError(f"{name} must be >= 1, got {value.tolist()}")
    return value.to(torch.int64)


def _coord(name: str, value: Coord, d: int, dev: torch.device) -> torch.Tensor:
    """``value`` as a tensor on ``dev``: integers stay int64, reals become float64."""
    t = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    if t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{name} must be real numbers, got dtype {t.dtype}")
    if t.ndim == 0 or t.shape[-1] != d:
        raise ValueError(
            f"{name} must have a last dim of {d} (one per spatial dim), got shape {tuple(t.shape)}"
        )
    return t.to(device=dev, dtype=torch.float64 if t.is_floating_point() else torch.int64)
