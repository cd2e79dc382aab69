"""What ``ats-bench extract`` measures against: the workloads, the machine, and
the physical limits and diagnostics, each measured in the same run as the
backends (docs/geometry.md, "The numba backend in detail").

* ``memcpy``: ``np.copyto`` of as many bytes as the patches between two
  preallocated buffers (one thread);
* ``strided_read``: a parallel numba kernel that reads exactly the image row
  segments the patches cover and writes nothing;
* ``first_touch``: allocating and filling fresh memory of the patches' size:
  the page faults and the OS's zeroing of new pages, which a fresh output
  pays and the strided read does not;
* :func:`minor_faults`, counted around every timed call, says which calls
  paid them.
"""

from __future__ import annotations

import functools
import os
import platform
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["Workload", "WORKLOADS", "DEFAULT_WORKLOADS", "LIMITS", "Evictor", "llc_bytes",
           "machine_info", "make_image", "minor_faults", "first_touch", "random_offsets",
           "strided_read"]


@dataclass(frozen=True)
class Workload:
    """One benchmark case: x of ``shape`` (B, C, *spatial), N patches per image."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    n_patches: int
    patch_size: tuple[int, ...]
    about: str

    @property
    def patch_bytes(self) -> int:
        B, C = self.shape[:2]
        itemsize = np.dtype(self.dtype).itemsize
        return B * self.n_patches * C * int(np.prod(self.patch_size)) * itemsize

    @property
    def image_bytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload("mnist", (32, 1, 1500, 1500), "float32", 10, (50, 50), "Megapixel MNIST"),
        Workload("speed_limits", (16, 3, 960, 1280), "float32", 5, (100, 100), "speed limits"),
        Workload("colon", (32, 3, 500, 500), "float32", 10, (27, 27), "colon cancer"),
        Workload("gigapixel", (1, 3, 16384, 16384), "uint8", 256, (256, 256), "a 268 Mpx slide"),
        Workload("many_small", (8, 3, 2048, 2048), "float32", 1000, (32, 32), "many small patches"),
        Workload("smoke", (2, 3, 64, 48), "float32", 4, (8, 6), "tiny, for tests"),
    ]
}
DEFAULT_WORKLOADS = ("mnist", "speed_limits", "colon", "gigapixel", "many_small")
LIMITS = ("memcpy", "strided_read")


def make_image(w: Workload, seed: int) -> torch.Tensor:
    """The workload's image batch, random (uniform floats or bytes)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(w.shape, dtype=getattr(torch, w.dtype))
    if x.dtype.is_floating_point:
        x.uniform_(generator=g)
    else:
        x.random_(0, 256, generator=g)
    return x


def random_offsets(w: Workload, rng: np.random.Generator) -> np.ndarray:
    """(B, N, d) starts with every patch inside the image."""
    B, spatial = w.shape[0], w.shape[2:]
    cols = [rng.integers(0, s - p + 1, (B, w.n_patches)) for s, p in zip(spatial, w.patch_size)]
    return np.stack(cols, -1).astype(np.int64)


# -- machine -----------------------------------------------------------------------


def llc_bytes(default: int = 32 << 20) -> int:
    """Size of the last-level cache from sysfs (``default`` if unreadable)."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    best = (0, 0)
    try:
        for index in base.glob("index*"):
            if (index / "type").read_text().strip() == "Instruction":
                continue
            level = int((index / "level").read_text())
            size = _parse_size((index / "size").read_text())
            best = max(best, (level, size))
    except (OSError, ValueError):
        return default
    return best[1] or default


def _parse_size(text: str) -> int:
    text = text.strip().upper()
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def machine_info() -> dict[str, Any]:
    """CPU model, core count, library versions and GPU name, for the header."""
    import numba

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "llc_bytes": llc_bytes(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numba": numba.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "numba_threads": numba.get_num_threads(),
    }


# -- cold caches and limits ---------------------------------------------------------


class Evictor:
    """Evicts the caches by reading a buffer several times the LLC size."""

    def __init__(self, nbytes: int) -> None:
        self.buffer = np.ones(max(nbytes, 1 << 20) // 8, dtype=np.int64)  # touched: mapped
        self.gpu = None
        if torch.cuda.is_available():
            l2 = torch.cuda.get_device_properties(0).L2_cache_size or (64 << 20)
            self.gpu = torch.empty(4 * l2, dtype=torch.uint8, device="cuda")

    def __call__(self) -> None:
        # One int64 per 64-byte line is enough to bring each line in.
        self.buffer[::8].sum()
        if self.gpu is not None:
            self.gpu.zero_()
            torch.cuda.synchronize()


@functools.cache
def _read_kernel():
    from numba import njit, prange

    @njit(parallel=True, cache=True, nogil=True)
    def read_rows(x, offsets, PZ, PY, PX):  # pragma: no cover - compiled
        """Read the row segments the patches cover; x (B,C,Z,Y,X) bytes."""
        B, N = offsets.shape[0], offsets.shape[1]
        C, Z, Y, X = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
        acc = np.zeros(B * N, np.uint8)
        for i in prange(B * N):
            b = i // N
            n = i - b * N
            oz, oy, ox = offsets[b, n, 0], offsets[b, n, 1], offsets[b, n, 2]
            lo, hi = max(ox, 0), min(ox + PX, X)
            a = np.uint8(0)
            for c in range(C):
                for z in range(max(oz, 0), min(oz + PZ, Z)):
                    for y in range(max(oy, 0), min(oy + PY, Y)):
                        if hi > lo:
                            # max() is a vectorised reduction: the read runs at
                            # memory speed, and returning it keeps it alive.
                            a = max(a, x[b, c, z, y, lo:hi].max())
            acc[i] = a
        return acc

    return read_rows


def strided_read(x: np.ndarray, offsets: np.ndarray, patch: tuple[int, ...]) -> int:
    """Read exactly the image rows the patches cover (no output is written)."""
    B, N, d = offsets.shape
    x5 = x[(slice(None), slice(None)) + (None,) * (3 - d)]
    isz = x5.itemsize
    off3 = np.zeros((B, N, 3), np.int64)
    off3[..., 3 - d :] = offsets
    off3[..., 2] *= isz
    p3 = (1,) * (3 - d) + tuple(patch)
    return int(_read_kernel()(x5.view(np.uint8), off3, p3[0], p3[1], p3[2] * isz).max())


def first_touch(nbytes: int) -> torch.Tensor:
    """Fresh memory of ``nbytes``, written once: what a fresh output pays
    before the copy (page faults and the OS zeroing new pages)."""
    return torch.empty(nbytes, dtype=torch.uint8).fill_(0)


def minor_faults() -> int:
    """Minor page faults of this process so far (getrusage)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
