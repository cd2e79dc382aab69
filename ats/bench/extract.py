"""``ats-bench extract``: time the extraction backends against physical limits.

For every workload (task-shaped, plus larger ones) and backend it reports the
median time of :func:`ats.core.extract.extract_patches`, the rate of patch
bytes written, and the speed-up over the reference loop. Two limits are
measured in the same run, with the same offsets:

* ``memcpy``: ``np.copyto`` of as many bytes as the patches between two
  preallocated buffers (one thread);
* ``strided_read``: a parallel numba kernel that reads exactly the image row
  segments the patches cover and writes nothing.

and two diagnostics that split the numba backend's time in two:

* ``first_touch``: allocating and filling fresh memory of the patches' size
  (the page faults and the kernel's zeroing of new pages, which the strided
  read does not pay; glibc serves outputs above 32 MB with fresh pages);
* ``numba_reused_out``: the numba backend writing into one preallocated
  output (``extract_patches(..., out=buffer)``), so without those faults.

Every call is cold: the last-level cache is evicted first (by reading a
buffer several times its size) and the offsets are fresh (drawn inside the
image by a seeded generator), so no call reuses the previous one's rows.

Run ``ats-bench extract --help``; :func:`run_benchmark` returns the results.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from ats.core.extract import extract_patches

__all__ = ["Workload", "WORKLOADS", "BACKENDS", "run_benchmark", "extract_command"]


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
# torch_cuda is torch on a CUDA copy of x; skipped without CUDA.
BACKENDS = ("reference", "numba", "torch", "torch_cuda")
LIMITS = ("memcpy", "strided_read")


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


# -- cold-cache helpers ----------------------------------------------------------------


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


# -- timing ----------------------------------------------------------------------------


def _cold_time(
    fn: Callable[[int], object], i: int, evict: Callable[[], None], sync: bool
) -> float:
    """Milliseconds of ``fn(i)`` right after a cache eviction."""
    evict()
    t0 = time.perf_counter()
    fn(i)
    if sync:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3


def _make_image(w: Workload, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(w.shape, dtype=getattr(torch, w.dtype))
    if x.dtype.is_floating_point:
        x.uniform_(generator=g)
    else:
        x.random_(0, 256, generator=g)
    return x


def _offsets(w: Workload, rng: np.random.Generator) -> np.ndarray:
    """(B, N, d) starts with every patch inside the image."""
    B, spatial = w.shape[0], w.shape[2:]
    cols = [rng.integers(0, s - p + 1, (B, w.n_patches)) for s, p in zip(spatial, w.patch_size)]
    return np.stack(cols, -1).astype(np.int64)


def run_workload(
    w: Workload,
    backends: Sequence[str],
    repeats: int,
    evict: Evictor,
    seed: int = 0,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Time ``backends`` and the two limits on one workload."""
    log(f"[{w.name}] allocating x {_shape(w.shape)} {w.dtype} ({w.image_bytes / 1e9:.2f} GB)")
    x = _make_image(w, seed)
    xn = x.numpy()
    rng = np.random.default_rng(seed)
    # Call 0 warms up, calls 1..repeats are timed: fresh offsets each call.
    offs = [_offsets(w, rng) for _ in range(repeats + 1)]
    offs_t = [torch.from_numpy(o) for o in offs]
    result: dict[str, Any] = {
        "shape": list(w.shape), "dtype": w.dtype, "n_patches": w.n_patches,
        "patch_size": list(w.patch_size), "patch_bytes": w.patch_bytes, "about": w.about,
        "backends": {}, "limits": {}, "diagnostics": {},
    }

    # (section, name, fn(call index), needs CUDA sync); all cold, same offsets.
    measures: list[tuple[str, str, Callable[[int], object], bool]] = []
    src = np.ones(w.patch_bytes, np.uint8)
    dst = np.zeros(w.patch_bytes, np.uint8)
    measures.append(("limits", "memcpy", lambda i: np.copyto(dst, src), False))
    measures.append(
        ("limits", "strided_read", lambda i: strided_read(xn, offs[i], w.patch_size), False)
    )
    measures.append(("diagnostics", "first_touch",
                     lambda i: torch.empty(w.patch_bytes, dtype=torch.uint8).fill_(0), False))
    if "numba" in backends:
        out = torch.zeros((w.shape[0], w.n_patches, w.shape[1], *w.patch_size), dtype=x.dtype)
        measures.append(("diagnostics", "numba_reused_out",
                         lambda i: extract_patches(x, offs_t[i], w.patch_size, backend="numba",
                                                   out=out),
                         False))
    for name in backends:
        if name == "torch_cuda":
            if not torch.cuda.is_available():
                log(f"[{w.name}] torch_cuda skipped: no CUDA device")
                continue
            xd, od, backend = x.cuda(), [o.cuda() for o in offs_t], "torch"
        else:
            xd, od, backend = x, offs_t, name

        def call(i: int, xd=xd, od=od, backend=backend) -> torch.Tensor:
            return extract_patches(xd, od[i], w.patch_size, backend=backend)

        measures.append(("backends", name, call, name == "torch_cuda"))

    # Warm up (numba compiles or loads its cache) with offsets 0; a slow
    # reference loop gets fewer timed calls.
    n_calls = {}
    for section, name, fn, sync in measures:
        log(f"[{w.name}] warm-up {name}")
        warm_ms = _cold_time(fn, 0, lambda: None, sync)
        n_calls[name] = repeats
        if name == "reference" and warm_ms * repeats > 10_000:
            n_calls[name] = min(repeats, 3)
    # Round-robin over the measures, so that a change in the machine's load
    # hits them all alike.
    times: dict[str, list[float]] = {name: [] for _, name, _, _ in measures}
    for r, i in enumerate(range(1, repeats + 1)):
        log(f"[{w.name}] round {r + 1}/{repeats}")
        for section, name, fn, sync in measures:
            if r < n_calls[name]:
                times[name].append(_cold_time(fn, i, evict, sync))
    for section, name, _, _ in measures:
        ms = statistics.median(times[name])
        result[section][name] = {"ms": ms, "gbps": w.patch_bytes / ms / 1e6,
                                 "repeats": len(times[name]), "times_ms": times[name]}

    b, lim = result["backends"], result["limits"]
    ref = b.get("reference")
    for entry in b.values():
        entry["speedup_vs_reference"] = ref["ms"] / entry["ms"] if ref else None
    result["numba_fraction_of_strided_read"] = (
        lim["strided_read"]["ms"] / b["numba"]["ms"] if "numba" in b else None
    )
    reused = result["diagnostics"].get("numba_reused_out")
    result["numba_reused_out_fraction_of_strided_read"] = (
        lim["strided_read"]["ms"] / reused["ms"] if reused else None
    )
    result["torch_cpu_over_numba"] = (
        b["torch"]["ms"] / b["numba"]["ms"] if "numba" in b and "torch" in b else None
    )
    return result


def run_benchmark(
    workloads: Sequence[str] = DEFAULT_WORKLOADS,
    backends: Sequence[str] = BACKENDS,
    repeats: int = 5,
    threads: int | None = None,
    seed: int = 0,
    evict_bytes: int | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Run the extraction benchmark; returns ``{"machine", "settings", "workloads"}``.

    Args:
        workloads: names in :data:`WORKLOADS`.
        backends: names in :data:`BACKENDS`.
        repeats: timed cold calls per backend (median reported).
        threads: CPU threads for torch and numba (default: all cores).
        seed: seeds the images and the offsets.
        evict_bytes: eviction buffer size; default 3x the last-level cache,
            at least 64 MiB and at most 2 GiB.
    """
    unknown = [n for n in workloads if n not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload(s) {unknown}; known: {', '.join(WORKLOADS)}")
    unknown = [n for n in backends if n not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend(s) {unknown}; known: {', '.join(BACKENDS)}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if threads is not None:
        import numba

        if not 1 <= threads <= numba.config.NUMBA_NUM_THREADS:
            raise ValueError(
                f"threads must be in [1, {numba.config.NUMBA_NUM_THREADS}], got {threads}"
            )
        torch.set_num_threads(threads)
        numba.set_num_threads(threads)
    if evict_bytes is None:
        evict_bytes = min(max(3 * llc_bytes(), 64 << 20), 2 << 30)
    evict = Evictor(evict_bytes)
    machine = machine_info()
    log(f"machine: {machine['cpu']}, {machine['cores']} cores, GPU: {machine['gpu'] or 'none'}")
    out: dict[str, Any] = {
        "machine": machine,
        "settings": {"repeats": repeats, "seed": seed, "evict_bytes": evict_bytes,
                     "workloads": list(workloads), "backends": list(backends)},
        "workloads": {},
    }
    for name in workloads:
        out["workloads"][name] = run_workload(WORKLOADS[name], backends, repeats, evict, seed, log)
    return out


# -- report ----------------------------------------------------------------------------


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def format_report(results: dict[str, Any]) -> str:
    """The human-readable tables of :func:`run_benchmark`'s results."""
    m, s = results["machine"], results["settings"]
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores, LLC {m['llc_bytes'] >> 20} MiB, "
        f"GPU: {m['gpu'] or 'none'}",
        f"python {m['python']}, torch {m['torch']}, numba {m['numba']}, numpy {m['numpy']}; "
        f"threads: torch {m['torch_threads']}, numba {m['numba_threads']}",
        f"cold calls: median of {s['repeats']}, caches evicted by reading "
        f"{s['evict_bytes'] >> 20} MiB, fresh offsets each call (seed {s['seed']})",
        "",
        f"{'workload':<13} {'backend':<18} {'ms':>9} {'GB/s':>7} {'vs ref':>8}",
    ]
    for name, r in results["workloads"].items():
        lines.append(
            f"{name} -- x {_shape(r['shape'])} {r['dtype']}, N={r['n_patches']}, patch "
            f"{_shape(r['patch_size'])}, patches {r['patch_bytes'] / 1e6:.1f} MB"
        )
        for key, e in r["backends"].items():
            sp = e["speedup_vs_reference"]
            sp_txt = f"{sp:7.1f}x" if sp else f"{'-':>8}"
            lines.append(f"{'':<13} {key:<18} {e['ms']:9.2f} {e['gbps']:7.2f} {sp_txt}")
        for key, e in r["limits"].items():
            lines.append(f"{'':<13} {'[' + key + ']':<18} {e['ms']:9.2f} {e['gbps']:7.2f}")
        for key, e in r["diagnostics"].items():
            lines.append(f"{'':<13} {'(' + key + ')':<18} {e['ms']:9.2f} {e['gbps']:7.2f}")
    lines += [
        "",
        "[limits] measured with the same bytes/rows; (diagnostics) split numba's time.",
        "",
        f"{'workload':<13} {'numba/read rate':>16} {'reused-out/read':>16} "
        f"{'torch-cpu/numba time':>21}",
    ]

    def fmt(v: float | None, suffix: str = "") -> str:
        return f"{v:.2f}{suffix}" if v else "-"

    for name, r in results["workloads"].items():
        lines.append(
            f"{name:<13} {fmt(r['numba_fraction_of_strided_read']):>16} "
            f"{fmt(r['numba_reused_out_fraction_of_strided_read']):>16} "
            f"{fmt(r['torch_cpu_over_numba'], 'x'):>21}"
        )
    return "\n".join(lines)


@click.command(name="extract")
@click.option("--workload", "workloads", multiple=True, type=click.Choice(list(WORKLOADS)),
              help="Workload to run (repeatable); default: all but smoke.")
@click.option("--backend", "backends", multiple=True, type=click.Choice(list(BACKENDS)),
              help="Backend to time (repeatable); default: all.")
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(min=1),
              help="Cold calls per backend; the median is reported.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch and numba (default: all cores).")
@click.option("--seed", default=0, show_default=True, help="Seed of images and offsets.")
@click.option("--evict-mb", type=click.IntRange(min=1), default=None,
              help="Cache-eviction buffer in MiB (default: 3x the last-level cache, <= 2048).")
@click.option("--json", "json_path", default=None, metavar="PATH",
              help="Also write the results as JSON to PATH ('-': stdout, instead of the table).")
def extract_command(workloads, backends, repeats, threads, seed, evict_mb, json_path) -> None:
    """Time patch extraction backends against memcpy and strided-read limits."""
    def log(msg: str) -> None:
        click.echo(msg, err=True)

    try:
        results = run_benchmark(workloads or DEFAULT_WORKLOADS, backends or BACKENDS, repeats,
                                threads, seed, evict_mb and evict_mb << 20, log=log)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if json_path == "-":
        click.echo(json.dumps(results, indent=2))
        return
    click.echo(format_report(results))
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2))
        log(f"wrote {json_path}")


if __name__ == "__main__":  # pragma: no cover
    extract_command()
