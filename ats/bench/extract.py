"""``ats-bench extract``: time the extraction backends against physical limits.

For every workload (task-shaped, plus larger ones) and backend it reports the
median time of :func:`ats.core.extract.extract_patches`, its spread, the rate
of patch bytes written, the page faults per call, and the speed-up over the
reference loop. Measured in the same run, with the same offsets
(:mod:`ats.bench.extract_limits`):

* the limits ``memcpy`` and ``strided_read`` (a parallel kernel that reads
  exactly the row segments the patches cover and writes nothing);
* ``first_touch``: the cost of fresh memory of the patches' size;
* ``numba_reused_out``: the path training takes:
  :class:`~ats.core.model.AttentionSampling` extracts host images into its
  :class:`~ats.core.buffers.PatchBuffers`, reused once nothing references
  the previous patches. This measure runs that same code.
* ``numba_fresh_memory``: the numba backend with an output of fresh memory
  on every call (``torch.empty``, which glibc serves with new pages above its
  mmap threshold). ``numba`` is the default call, a new output per call that
  the backend takes from its pool of dropped outputs
  (:data:`ats.plugins.extractors.numba.OUTPUTS`).

Every call is cold: the last-level cache is evicted first (by reading a
buffer several times its size) and the offsets are fresh (drawn inside the
image by a seeded generator), so no call reuses the previous one's rows. The
measures take turns, round by round, so that a change in the machine's load
hits them all alike; each ratio's spread is the interquartile range of its
per-round ratios.

Run ``ats-bench extract --help``; :func:`run_benchmark` returns the results.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from ats.bench.extract_limits import (
    DEFAULT_WORKLOADS,
    WORKLOADS,
    Evictor,
    Workload,
    first_touch,
    llc_bytes,
    machine_info,
    make_image,
    minor_faults,
    random_offsets,
    strided_read,
)
from ats.core.buffers import PatchBuffers
from ats.core.extract import extract_patches
from ats.plugins.extractors.numba import NumbaExtractor

__all__ = ["Workload", "WORKLOADS", "BACKENDS", "run_benchmark", "extract_command"]

# torch_cuda is torch on a CUDA copy of x; skipped without CUDA.
BACKENDS = ("reference", "numba", "torch", "torch_cuda")
# The ratios compared from run to run: (key, numerator measure, denominator
# measure), each a ratio of times (higher is better for the first two).
RATIOS = (
    ("numba_fraction_of_strided_read", "strided_read", "numba"),
    ("numba_reused_out_fraction_of_strided_read", "strided_read", "numba_reused_out"),
    ("numba_fresh_memory_fraction_of_strided_read", "strided_read", "numba_fresh_memory"),
    ("torch_cpu_over_numba", "torch", "numba"),
)

Measure = tuple[str, str, Callable[[int], object], bool]  # section, name, fn(call), CUDA sync


def _cold_call(fn: Callable[[int], object], i: int, evict: Callable[[], None],
               sync: bool) -> tuple[float, int]:
    """Milliseconds and minor page faults of ``fn(i)`` right after an eviction."""
    evict()
    faults = minor_faults()
    t0 = time.perf_counter()
    fn(i)
    if sync:
        torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) * 1e3
    return ms, minor_faults() - faults


def _quartiles(values: Sequence[float]) -> list[float]:
    """[first, third] quartile (both the value itself for one value)."""
    if len(values) < 2:
        return [values[0], values[0]] if values else [float("nan")] * 2
    q = statistics.quantiles(values, n=4, method="inclusive")
    return [q[0], q[2]]


def _measures(w: Workload, x: torch.Tensor, offs: list[np.ndarray],
              backends: Sequence[str], log: Callable[[str], None]) -> list[Measure]:
    """Everything timed on one workload, with the same offsets for all."""
    xn = x.numpy()
    offs_t = [torch.from_numpy(o) for o in offs]
    src = np.ones(w.patch_bytes, np.uint8)
    dst = np.zeros(w.patch_bytes, np.uint8)
    measures: list[Measure] = [
        ("limits", "memcpy", lambda i: np.copyto(dst, src), False),
        ("limits", "strided_read", lambda i: strided_read(xn, offs[i], w.patch_size), False),
        ("diagnostics", "first_touch", lambda i: first_touch(w.patch_bytes), False),
    ]
    if "numba" in backends:
        buffers = PatchBuffers()
        shape = (w.shape[0], w.n_patches, w.shape[1], *w.patch_size)

        def training_path(i: int) -> torch.Tensor:
            out = buffers.take(shape, x.dtype)
            return extract_patches(x, offs_t[i], w.patch_size, backend="numba", out=out)

        measures.append(("diagnostics", "numba_reused_out", training_path, False))
        fresh = NumbaExtractor()
        fresh.outputs = None  # fresh memory every call, as torch.empty gives it
        measures.append(("diagnostics", "numba_fresh_memory",
                         lambda i: extract_patches(x, offs_t[i], w.patch_size, backend=fresh),
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
    return measures


def run_workload(
    w: Workload,
    backends: Sequence[str],
    repeats: int,
    evict: Evictor,
    seed: int = 0,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Time ``backends``, the limits and the diagnostics on one workload."""
    log(f"[{w.name}] allocating x {_shape(w.shape)} {w.dtype} ({w.image_bytes / 1e9:.2f} GB)")
    x = make_image(w, seed)
    rng = np.random.default_rng(seed)
    # Call 0 warms up, calls 1..repeats are timed: fresh offsets each call.
    offs = [random_offsets(w, rng) for _ in range(repeats + 1)]
    measures = _measures(w, x, offs, backends, log)
    # Warm up (numba compiles or loads its cache); a slow reference loop gets
    # fewer timed calls.
    n_calls = {}
    for _, name, fn, sync in measures:
        log(f"[{w.name}] warm-up {name}")
        warm_ms, _ = _cold_call(fn, 0, lambda: None, sync)
        n_calls[name] = min(repeats, 3) if name == "reference" and warm_ms * repeats > 10_000 \
            else repeats
    times: dict[str, list[float]] = {name: [] for _, name, _, _ in measures}
    faults: dict[str, list[int]] = {name: [] for _, name, _, _ in measures}
    for r in range(repeats):
        log(f"[{w.name}] round {r + 1}/{repeats}")
        for _, name, fn, sync in measures:
            if r < n_calls[name]:
                ms, nf = _cold_call(fn, r + 1, evict, sync)
                times[name].append(ms)
                faults[name].append(nf)

    result: dict[str, Any] = {
        "shape": list(w.shape), "dtype": w.dtype, "n_patches": w.n_patches,
        "patch_size": list(w.patch_size), "patch_bytes": w.patch_bytes, "about": w.about,
        "backends": {}, "limits": {}, "diagnostics": {},
    }
    for section, name, _, _ in measures:
        ms = statistics.median(times[name])
        result[section][name] = {
            "ms": ms, "gbps": w.patch_bytes / ms / 1e6, "repeats": len(times[name]),
            "times_ms": times[name], "iqr_ms": _quartiles(times[name]),
            "faults": statistics.median(faults[name]),
        }
    ref = result["backends"].get("reference")
    for entry in result["backends"].values():
        entry["speedup_vs_reference"] = ref["ms"] / entry["ms"] if ref else None
    for key, num, den in RATIOS:
        if num in times and den in times:
            result[key] = statistics.median(times[num]) / statistics.median(times[den])
            per_round = [a / b for a, b in zip(times[num], times[den])]
            result[key + "_iqr"] = _quartiles(per_round)
        else:
            result[key] = result[key + "_iqr"] = None
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
        f"cold calls: median of {s['repeats']} (IQR: interquartile range), caches evicted by "
        f"reading {s['evict_bytes'] >> 20} MiB, fresh offsets each call (seed {s['seed']})",
        "",
        f"{'workload':<13} {'backend':<21} {'ms':>9} {'IQR ms':>15} {'GB/s':>7} "
        f"{'faults':>7} {'vs ref':>8}",
    ]
    for name, r in results["workloads"].items():
        lines.append(
            f"{name} -- x {_shape(r['shape'])} {r['dtype']}, N={r['n_patches']}, patch "
            f"{_shape(r['patch_size'])}, patches {r['patch_bytes'] / 1e6:.1f} MB"
        )
        rows = [(k, e) for k, e in r["backends"].items()]
        rows += [("[" + k + "]", e) for k, e in r["limits"].items()]
        rows += [("(" + k + ")", e) for k, e in r["diagnostics"].items()]
        for key, e in rows:
            sp = e.get("speedup_vs_reference")
            sp_txt = f"{sp:7.1f}x" if sp else f"{'':>8}"
            iqr = f"{e['iqr_ms'][0]:.2f}-{e['iqr_ms'][1]:.2f}"
            lines.append(f"{'':<13} {key:<21} {e['ms']:9.2f} {iqr:>15} {e['gbps']:7.2f} "
                         f"{e['faults']:7.0f} {sp_txt}")
    lines += [
        "",
        "[limits] measured with the same bytes/rows. (diagnostics): numba_reused_out is the "
        "path training takes",
        "(AttentionSampling's reused patch buffers); numba_fresh_memory is numba writing fresh "
        "pages every call;",
        "first_touch is what those cost alone. faults: minor page faults per call.",
        "",
        f"{'workload':<13} {'numba/read rate':>22} {'reused-out/read':>22} "
        f"{'fresh-memory/read':>22} {'torch-cpu/numba time':>24}",
    ]

    def fmt(r: dict[str, Any], key: str, suffix: str = "") -> str:
        v, iqr = r.get(key), r.get(key + "_iqr")
        if not v:
            return "-"
        return f"{v:.2f}{suffix} [{iqr[0]:.2f}-{iqr[1]:.2f}]"

    for name, r in results["workloads"].items():
        lines.append(
            f"{name:<13} {fmt(r, 'numba_fraction_of_strided_read'):>22} "
            f"{fmt(r, 'numba_reused_out_fraction_of_strided_read'):>22} "
            f"{fmt(r, 'numba_fresh_memory_fraction_of_strided_read'):>22} "
            f"{fmt(r, 'torch_cpu_over_numba', 'x'):>24}"
        )
    lines.append("(median ratio [interquartile range of the per-round ratios])")
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
