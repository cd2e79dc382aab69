"""``ats-bench sources``: patches per second from image files, next to the
strided-read limit, for a workload of ``ats-bench extract`` (by default
``gigapixel``: one 16384² RGB image, 256 patches of 256²).

The image is made once with structured, compressible content (smooth
shading, edges and a little noise, about as compressible as a stained slide
under deflate), kept in RAM and written as

* a zlib-compressed, 256²-tiled, pyramidal TIFF (``tiff``), read by tiles
  through the ``tiff`` source with an empty decoded-tile cache per call;
* an uncompressed ``.npy`` read through a memory map (``memmap``);

and read from RAM too (``ram``: an in-memory array source), as float32 in
[0, 1] (as the model reads them) into one reused output. Every call gets
fresh offsets (the same for every row of one round). ``cold`` rows drop the
file's pages from the OS page cache first (``posix_fadvise``), so the bytes
come from the disk; ``warm`` rows find them in the page cache. The limit is
the extract bench's ``strided_read``: a parallel read of exactly the image
rows the patches cover, from RAM, writing nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from ats.bench.extract_limits import (
    WORKLOADS,
    Workload,
    machine_info,
    random_offsets,
    strided_read,
)

__all__ = ["run_sources_benchmark", "sources_command", "slide_like"]

def slide_like(shape: tuple[int, int, int], y0: int, rows: int, seed: int) -> np.ndarray:
    """Rows ``[y0, y0 + rows)`` of a deterministic structured image (C, rows, W)
    uint8: blobs of smooth colour with sharp borders and +-3 of noise."""
    C, _, W = shape
    rng = np.random.default_rng((seed, y0))
    y = np.arange(y0, y0 + rows, dtype=np.float32)[:, None]
    x = np.arange(W, dtype=np.float32)[None, :]
    cells = (np.sin(y / 97.0) * np.cos(x / 131.0) + np.sin((x + y) / 211.0)) > 0.2
    out = np.empty((C, rows, W), np.uint8)
    for c in range(C):
        shade = 150 + 60 * np.sin(x / (300.0 + 40 * c) + y / 500.0)
        value = np.where(cells, shade - 70, shade) + rng.integers(-3, 4, (rows, W))
        out[c] = np.clip(value, 0, 255)
    return out


def _drop_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _write_files(x: np.ndarray, folder: Path, log: Callable[[str], None]) -> dict[str, Path]:
    from ats.make.pyramid import write_tiff_pyramid

    paths = {"tiff": folder / "image.tif", "npy": folder / "image.npy"}
    log(f"writing {paths['npy']}")
    np.save(paths["npy"], x)
    log(f"writing {paths['tiff']} (zlib, 256x256 tiles, pyramid)")

    def render(level: int, y: int, x0: int, h: int, w: int) -> np.ndarray:
        f = 2 ** level
        return np.moveaxis(x[:, y * f:(y + h) * f:f, x0 * f:(x0 + w) * f:f], 0, -1)

    write_tiff_pyramid(paths["tiff"], x.shape[1:], x.shape[0], np.uint8, render)
    return paths


def run_sources_benchmark(workload: str | Workload = "gigapixel", repeats: int = 5,
                          folder: str | os.PathLike | None = None, seed: int = 0,
                          log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run the benchmark; returns ``{"machine", "workload", "files", "rows"}``."""
    from ats.sources import TileCache, close_handles, open_source, read_patches

    w = WORKLOADS[workload] if isinstance(workload, str) else workload
    if len(w.shape) != 4 or w.shape[0] != 1:
        raise ValueError(f"workload {workload!r} must be one 2-D image (1, C, H, W), got {w.shape}")
    shape = w.shape[1:]
    made = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="ats-bench-"))
    made.mkdir(parents=True, exist_ok=True)
    try:
        log(f"making a {'x'.join(map(str, shape))} {w.dtype} image")
        x = np.empty(shape, np.uint8)
        for y0 in range(0, shape[1], 1024):
            x[:, y0:y0 + 1024] = slide_like(shape, y0, min(1024, shape[1] - y0), seed)
        paths = _write_files(x, made, log)
        sources = {"ram": open_source(x), "memmap": open_source(paths["npy"]),
                   "tiff": open_source(paths["tiff"])}
        rng = np.random.default_rng(seed)
        offsets = [random_offsets(w, rng) for _ in range(repeats + 1)]
        patch = w.patch_size
        cached = TileCache()
        # one reused output, as the model's patch buffers are: no fresh pages per call
        out = torch.empty((1, w.n_patches, shape[0], *patch), dtype=torch.float32)

        def reader(name: str, cache: TileCache | None = None) -> Callable[[int], object]:
            def call(i: int) -> object:
                return read_patches([sources[name]], offsets[i], patch, as_float=True, out=out,
                                    cache=cache if cache is not None else TileCache())
            return call

        def nothing(i: int) -> None:
            pass

        def drop(name: str) -> Callable[[int], None]:
            def cold(i: int) -> None:
                close_handles()  # a mapped file's pages are dropped only once unmapped
                _drop_page_cache(Path(sources[name].path))
            return cold

        def fill_cache(i: int) -> None:  # the timed call then finds every tile decoded
            cached.clear()
            reader("tiff", cached)(i)

        # name -> (untimed preparation, timed call)
        measures: dict[str, tuple[Callable[[int], object], Callable[[int], object]]] = {
            "ram": (nothing, reader("ram")),
            "memmap_warm": (nothing, reader("memmap")),
            "memmap_cold": (drop("memmap"), reader("memmap")),
            "tiff_warm": (nothing, reader("tiff")),
            "tiff_cold": (drop("tiff"), reader("tiff")),
            "tiff_cached": (fill_cache, reader("tiff", cached)),
            "strided_read": (nothing, lambda i: strided_read(x[None], offsets[i], patch)),
        }
        for prepare, call in measures.values():
            prepare(0)
            call(0)  # warm-up: numba loads its kernels, files are opened
        times: dict[str, list[float]] = {name: [] for name in measures}
        for i in range(1, repeats + 1):
            log(f"round {i}/{repeats}")
            for name, (prepare, call) in measures.items():  # round-robin: load hits all alike
                prepare(i)
                start = time.perf_counter()
                call(i)
                times[name].append(time.perf_counter() - start)
        rows = {}
        limit = statistics.median(times["strided_read"])
        for name, values in times.items():
            s = statistics.median(values)
            rows[name] = {"ms": 1e3 * s, "patches_per_second": w.n_patches / s,
                          "fraction_of_strided_read": limit / s, "times_ms": [1e3 * v for v in values]}
        files = {k: {"path": str(p), "bytes": p.stat().st_size} for k, p in paths.items()}
        files["tiff"]["compression_ratio"] = x.nbytes / paths["tiff"].stat().st_size
    finally:
        if folder is None:
            shutil.rmtree(made, ignore_errors=True)
    return {"machine": machine_info(), "workload": {"name": w.name, "shape": list(w.shape),
                                                     "n_patches": w.n_patches,
                                                     "patch_size": list(patch)},
            "repeats": repeats, "files": files, "rows": rows}


def format_report(r: dict[str, Any]) -> str:
    m, w = r["machine"], r["workload"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores; numba threads {m['numba_threads']}",
             f"workload {w['name']}: {'x'.join(map(str, w['shape']))} uint8, N={w['n_patches']}, "
             f"patch {'x'.join(map(str, w['patch_size']))}; median of {r['repeats']} calls, "
             "fresh offsets each",
             f"tiff: {r['files']['tiff']['bytes'] / 2**20:,.0f} MiB (deflate, ratio "
             f"{r['files']['tiff']['compression_ratio']:.2f}); npy: "
             f"{r['files']['npy']['bytes'] / 2**20:,.0f} MiB", "",
             f"{'read from':<14} {'ms':>9} {'patches/s':>10} {'of strided read':>16}"]
    for name, e in r["rows"].items():
        label = f"[{name}]" if name == "strided_read" else name
        lines.append(f"{label:<14} {e['ms']:9.1f} {e['patches_per_second']:10,.0f} "
                     f"{e['fraction_of_strided_read']:16.3f}")
    return "\n".join(lines)


@click.command(name="sources")
@click.option("--workload", default="gigapixel", show_default=True,
              type=click.Choice([n for n, w in WORKLOADS.items() if w.shape[0] == 1]))
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--dir", "folder", default=None, type=click.Path(file_okay=False),
              help="Where to write the files (default: a temporary folder, removed after).")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "json_path", default=None, metavar="PATH",
              help="Also write the results as JSON to PATH.")
def sources_command(workload, repeats, folder, seed, json_path) -> None:
    """Patches per second from a compressed pyramidal TIFF, a memory map and RAM,
    next to the strided-read limit."""
    results = run_sources_benchmark(workload, repeats, folder, seed,
                                    log=lambda m: click.echo(m, err=True))
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2))
    click.echo(format_report(results))
