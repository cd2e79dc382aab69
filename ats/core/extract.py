"""The one patch-extraction interface: :func:`extract_patches`.

Given an image batch ``x`` of shape ``(B, C, *spatial)`` (1 to 3 spatial
dims, channels first) and integer top-left ``offsets`` of shape ``(B, N, d)``,
return the patches ``(B, N, C, *patch_size)``; pixels outside the image are 0.
Any offset is legal, also far outside the image (docs/geometry.md, "Patch
extraction").

The work is done by a backend, an :class:`Extractor` registered in
:data:`ats.registry.extractor` (``reference``, ``numba``, ``torch``, ``auto``;
see :mod:`ats.plugins.extractors`). This module owns what every backend
shares: argument validation (so that user mistakes raise a clear
``ValueError``/``TypeError`` here, never a stack trace from numba or torch),
the backend lookup, and the integer -> float conversion rule.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import ClassVar, Union

import numpy as np
import torch

from ats.core.geometry import as_patch_size
from ats.registry import extractor as extractor_registry

__all__ = [
    "Array",
    "Extractor",
    "SUPPORTED_DTYPES",
    "extract_patches",
    "float_scale",
    "to_float",
    "torch_dtype",
    "as_torch",
    "clamp_offsets_host",
    "clamp_offsets_torch",
    "get_extractor",
    "validate",
]

Array = Union[torch.Tensor, np.ndarray]

# The dtypes of the original op (docs/geometry.md, "Patch extraction"), and the
# factor that maps each to [0, 1] floats when ``as_float=True``.
_SCALES = {
    torch.uint8: 1.0 / 255.0,
    torch.uint16: 1.0 / 65535.0,
    torch.float32: 1.0,
    torch.float64: 1.0,
}
SUPPORTED_DTYPES: tuple[torch.dtype, ...] = tuple(_SCALES)
_NUMPY_TO_TORCH = {
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.uint16): torch.uint16,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
}
_DTYPE_NAMES = "uint8, uint16, float32, float64"


class Extractor:
    """Base class of the extraction backends.

    Subclasses set :attr:`name`, implement :meth:`extract` and, when they
    cannot handle every input, :meth:`supports` / :meth:`unsupported_reason`.
    Constructors take no required arguments (``extractor.build(name)``).
    Calling an instance validates its arguments like :func:`extract_patches`.
    """

    name: ClassVar[str] = "extractor"

    def supports(self, x: Array) -> bool:
        """Whether this backend can read ``x`` (e.g. host vs CUDA memory)."""
        return True

    def unsupported_reason(self, x: Array) -> str:
        """Why :meth:`supports` is False for ``x``; used in the error message."""
        return "this input is not supported"

    def check(self, x: Array) -> None:
        """Raise a ``ValueError`` naming the backend when it cannot handle ``x``."""
        if not self.supports(x):
            raise ValueError(
                f"extractor {self.name!r} cannot handle x: {self.unsupported_reason(x)}"
            )

    def extract(
        self,
        x: Array,
        offsets: torch.Tensor,
        patch_size: tuple[int, ...],
        as_float: bool,
    ) -> torch.Tensor:
        """Extract patches from validated inputs.

        Args:
            x: ``(B, C, *spatial)`` torch tensor or numpy array (not a numpy
                subclass), a supported dtype, ``1 <= d <= 3`` spatial dims.
            offsets: ``(B, N, d)`` int64 tensor on x's device (CPU for numpy),
                contiguous, each value clamped into ``[-patch, size]`` for its
                dim, which keeps every patch's contents unchanged and all
                index arithmetic far from overflow.
            patch_size: ``d`` positive ints.
            as_float: return float32, integer dtypes scaled to [0, 1].

        Returns:
            ``(B, N, C, *patch_size)`` tensor on x's device (CPU for numpy).
        """
        raise NotImplementedError

    def extract_into(
        self,
        x: Array,
        offsets: torch.Tensor,
        patch_size: tuple[int, ...],
        out: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`extract` into ``out``, a contiguous ``(B, N, C, *patch_size)``
        tensor of x's dtype (or float32: then converted as ``as_float``) on
        x's device; returns ``out``. Backends that can write in place override
        this copy, which saves the page faults of fresh memory."""
        as_float = out.dtype != torch_dtype(x)
        return out.copy_(self.extract(x, offsets, patch_size, as_float))

    def __call__(
        self,
        x: Array,
        offsets: Array,
        patch_size: int | Sequence[int],
        *,
        as_float: bool = False,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return extract_patches(x, offsets, patch_size, backend=self, as_float=as_float, out=out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def extract_patches(
    x: Array,
    offsets: Array,
    patch_size: int | Sequence[int],
    *,
    backend: str | Extractor = "auto",
    as_float: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Patches of ``x`` at integer ``offsets``, zero outside the image.

    Args:
        x: ``(B, C, *spatial)`` with 1 to 3 spatial dims; a torch tensor (any
            device) or a numpy array / ``np.memmap`` (read in place, never
            copied whole). dtype uint8, uint16, float32 or float64.
        offsets: ``(B, N, d)`` integers (torch or numpy), the top-left corner
            of each patch in x's pixel coordinates; negative or out-of-image
            values are legal.
        patch_size: an int (every dim) or ``d`` positive ints.
        backend: a registered extractor name (``"auto"``, ``"numba"``,
            ``"torch"``, ``"reference"``, ...) or an :class:`Extractor`.
        as_float: return float32; uint8 is scaled by 1/255 and uint16 by
            1/65535, floats are only cast.
        out: an optional contiguous tensor of the result's shape, dtype and
            device to fill and return. Reusing one (or a pinned buffer) saves
            the page faults of fresh memory on every call, which cost as much
            as the copy for large outputs; the caller must then not keep the
            previous result.

    Returns:
        ``(B, N, C, *patch_size)`` tensor on x's device (CPU for numpy input),
        with x's dtype, or float32 when ``as_float``.

    Raises:
        TypeError: x, offsets or patch_size has the wrong type or dtype.
        ValueError: wrong shapes, non-positive patch sizes, an unknown backend
            or one that cannot handle x.
    """
    impl = get_extractor(backend)
    x, offsets, patch = validate(x, offsets, patch_size, as_float=as_float)
    impl.check(x)
    B, N = offsets.shape[:2]
    C = x.shape[1]
    dtype = torch.float32 if as_float else torch_dtype(x)
    device = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    shape = (B, N, C, *patch)
    if out is not None:
        _check_out(out, shape, dtype, device)
    if B * N * C == 0 or any(s == 0 for s in x.shape[2:]):
        # nothing to copy, or an empty image where every pixel is outside
        if out is None:
            return torch.zeros(shape, dtype=dtype, device=device)
        return out.zero_()
    if out is not None:
        return impl.extract_into(x, offsets, patch, out)
    return impl.extract(x, offsets, patch, as_float)


def _check_out(out: object, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> None:
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != shape or out.dtype != dtype or out.device != device or \
            not out.is_contiguous():
        raise ValueError(
            f"out must be a contiguous {dtype} tensor of shape {shape} on {device}, got "
            f"{'non-contiguous ' if not out.is_contiguous() else ''}{out.dtype} "
            f"{tuple(out.shape)} on {out.device}"
        )


def get_extractor(backend: str | Extractor) -> Extractor:
    """The :class:`Extractor` for a registered name (or the instance itself).

    Unknown names raise the registry's error, which lists the known names.
    """
    if isinstance(backend, Extractor):
        return backend
    if not isinstance(backend, str):
        raise TypeError(
            f"backend must be an extractor name or an Extractor instance, got "
            f"{type(backend).__name__}"
        )
    impl = extractor_registry.build(backend)
    if not isinstance(impl, Extractor):
        raise TypeError(
            f"extractor {backend!r} built a {type(impl).__name__}, not an "
            "ats.core.extract.Extractor"
        )
    return impl


# -- validation -----------------------------------------------------------------


def validate(
    x: object,
    offsets: object,
    patch_size: object,
    *,
    as_float: object = False,
) -> tuple[Array, torch.Tensor, tuple[int, ...]]:
    """Check and normalise the arguments of :func:`extract_patches`.

    Returns ``(x, offsets, patch_size)`` in the form :meth:`Extractor.extract`
    receives: numpy subclasses (memmap) viewed as plain arrays, offsets as a
    contiguous int64 tensor on x's device clamped per dim into
    ``[-patch, size]``, patch_size as a tuple of ``d`` ints.
    """
    x = _validate_x(x)
    d = x.ndim - 2
    patch = as_patch_size(patch_size, d)
    if not isinstance(as_float, (bool, np.bool_)):
        raise TypeError(f"as_float must be a bool, got {type(as_float).__name__}")
    return x, _validate_offsets(offsets, x, patch), patch


def _validate_x(x: object) -> Array:
    if isinstance(x, np.ndarray):
        x = np.asarray(x)  # np.memmap -> plain ndarray view of the same pages
        if x.dtype not in _NUMPY_TO_TORCH:
            raise TypeError(
                f"x has unsupported dtype {x.dtype}; expected one of {_DTYPE_NAMES} "
                "(native byte order)"
            )
    elif isinstance(x, torch.Tensor):
        if x.layout != torch.strided:
            raise TypeError(f"x must be a dense (strided) tensor, got layout {x.layout}")
        if x.dtype not in _SCALES:
            raise TypeError(
                f"x has unsupported dtype {x.dtype}; expected one of {_DTYPE_NAMES}"
            )
    else:
        raise TypeError(
            f"x must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}"
        )
    if not 3 <= x.ndim <= 5:
        raise ValueError(
            "x must have shape (B, C, *spatial) with 1 to 3 spatial dims (a 3-D "
            f"to 5-D array), got shape {tuple(x.shape)}"
        )
    return x


def _validate_offsets(offsets: object, x: Array, patch: tuple[int, ...]) -> torch.Tensor:
    d = len(patch)
    if isinstance(offsets, (list, tuple)):
        offsets = np.asarray(offsets)
    if isinstance(offsets, np.ndarray):
        if not np.issubdtype(offsets.dtype, np.integer):
            raise TypeError(
                f"offsets must be integers, got dtype {offsets.dtype}; round them "
                "explicitly (e.g. np.rint(o).astype(np.int64))"
            )
    elif isinstance(offsets, torch.Tensor):
        dt = offsets.dtype
        if dt.is_floating_point or dt.is_complex or dt == torch.bool:
            raise TypeError(
                f"offsets must be an integer tensor, got dtype {offsets.dtype}; round "
                "them explicitly (e.g. torch.round(o).long())"
            )
    else:
        raise TypeError(
            f"offsets must be a torch.Tensor or numpy.ndarray of integers, got "
            f"{type(offsets).__name__}"
        )
    if offsets.ndim != 3 or offsets.shape[-1] != d:
        raise ValueError(
            f"offsets must have shape (B, N, {d}) for x with {d} spatial dims, got "
            f"shape {tuple(offsets.shape)}"
        )
    if offsets.shape[0] != x.shape[0]:
        raise ValueError(
            f"offsets and x have different batch sizes: {offsets.shape[0]} vs {x.shape[0]}"
        )
    # Clamping each start into [-patch, size] keeps every patch's contents (a
    # start <= -patch or >= size is fully outside either way) and keeps all
    # index arithmetic far from overflow.
    sizes = tuple(x.shape[2:])
    if isinstance(x, np.ndarray) or x.device.type == "cpu":
        return clamp_offsets_host(offsets, sizes, patch)
    return clamp_offsets_torch(offsets, sizes, patch, x.device)


def clamp_offsets_host(offsets: np.ndarray | torch.Tensor, sizes: Sequence[int],
                       patch: Sequence[int]) -> torch.Tensor:
    """Integer ``offsets`` (B, N, d) clamped per dim into ``[-patch, size]``,
    as a contiguous int64 CPU tensor, with numpy (whose calls cost less than
    torch's: this runs once per batch, often with cold caches)."""
    o = _saturate_uint64(offsets)
    # Plain ufuncs (np.clip costs more); int64 bounds make an int64 result.
    o = np.minimum(o, np.array(sizes, dtype=np.int64), order="C")
    np.maximum(o, np.array([-p for p in patch], dtype=np.int64), out=o)
    return torch.from_numpy(o)


def clamp_offsets_torch(offsets: np.ndarray | torch.Tensor, sizes: Sequence[int],
                        patch: Sequence[int], device: torch.device | str) -> torch.Tensor:
    """:func:`clamp_offsets_host` with torch ops on ``device`` (where x is:
    offsets are small, so they are moved rather than refused). The same
    result on any device, the CPU included."""
    if _is_uint64(offsets):
        offsets = _saturate_uint64(offsets)  # int64 would wrap them to negative
    o = torch.as_tensor(offsets).to(device=device, dtype=torch.int64)
    lo = torch.tensor([-p for p in patch], device=device)
    hi = torch.tensor(list(sizes), device=device)
    return torch.maximum(torch.minimum(o, hi), lo).contiguous()


def _is_uint64(offsets: np.ndarray | torch.Tensor) -> bool:
    if isinstance(offsets, np.ndarray):
        return offsets.dtype == np.uint64
    return offsets.dtype == torch.uint64


def _saturate_uint64(offsets: np.ndarray | torch.Tensor) -> np.ndarray:
    """``offsets`` as a host numpy array, uint64 values above the int64 range
    lowered to its maximum (they are past any image either way)."""
    o = offsets if isinstance(offsets, np.ndarray) else offsets.cpu().numpy()
    if o.dtype == np.uint64:
        o = np.minimum(o, np.iinfo(np.int64).max).astype(np.int64)
    return o


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


# -- helpers shared by the backends ---------------------------------------------


def torch_dtype(x: Array) -> torch.dtype:
    """x's dtype as a torch dtype (also for numpy arrays)."""
    return x.dtype if isinstance(x, torch.Tensor) else _NUMPY_TO_TORCH[x.dtype]


def float_scale(dtype: torch.dtype | np.dtype) -> float:
    """The factor that maps ``dtype`` to [0, 1] floats (1.0 for floats)."""
    if not isinstance(dtype, torch.dtype):
        dtype = _NUMPY_TO_TORCH[np.dtype(dtype)]
    return _SCALES[dtype]


def to_float(patches: torch.Tensor) -> torch.Tensor:
    """``patches`` as float32: integers scaled by :func:`float_scale`.

    The scaling multiplies in float32 (``float32(v) * float32(scale)``), the
    same arithmetic as the numba kernel, so the backends agree bit for bit.
    """
    if patches.dtype == torch.float32:
        return patches
    scale = float_scale(patches.dtype)
    out = patches.to(torch.float32)
    if scale != 1.0:
        out.mul_(scale)
    return out


def as_torch(x: Array) -> torch.Tensor:
    """``x`` as a tensor sharing its memory (numpy arrays are not copied)."""
    if isinstance(x, torch.Tensor):
        return x
    with warnings.catch_warnings():
        # Read-only arrays (np.memmap mode="r") are only ever read here.
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(x)
