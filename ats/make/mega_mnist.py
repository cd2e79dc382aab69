"""``ats-make mega_mnist``: Megapixel MNIST of any size as image files.

The generator of the ``mega_mnist`` task (the original ``make_mnist.py``
draws, docs/tasks/mega_mnist.md) runs on a canvas ``k`` times smaller than
the one asked for, and every object (the digits and the noise patterns) is
drawn ``k`` times larger, at its place times ``k``: the image is the paper's
image, ``k`` times the size, so the task stays the same task (digits and
patch size scale with the canvas). With ``k = 1`` level 0 is exactly the
task's own full-resolution image. Each image is rendered tile by tile for
every pyramid level, objects resized once per level, so no whole image is
ever in memory (docs/tasks/images.md, "A gigapixel benchmark").
"""

from __future__ import annotations

import csv
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import click
import numpy as np

from ats.make.pyramid import write_npy, write_tiff_pyramid

__all__ = ["ScaledCanvas", "mega_mnist_command", "make_mega_mnist"]

DIGIT = 28
#: the paper's canvas side: the default object scale is (canvas side) / PAPER_SIDE
PAPER_SIDE = 1500
PAPER_NOISE = 50  #: noise placements per PAPER_SIDE² (the paper's density)


class ScaledCanvas:
    """Renders the images of a Megapixel MNIST data set ``scale`` times larger.

    Args:
        dataset: a ``tasks.mega_mnist.MegapixelMNIST`` (its draws are used).
        scale: k, the object scale (canvas = k x the dataset's canvas).
        shape: the canvas (H, W) of level 0.
    """

    def __init__(self, dataset, scale: float, shape: tuple[int, int]) -> None:
        self.dataset, self.k, self.shape = dataset, float(scale), shape
        self._blocks: dict[tuple, list[np.ndarray]] = {}

    def _resized(self, objects: list[np.ndarray], side: int) -> list[np.ndarray]:
        """Objects (28x28 in [0, 1]) as uint8 ``side`` x ``side`` blocks
        (255 x value, truncated, as the original)."""
        from skimage.transform import resize

        if side == DIGIT:
            return [(o * 255).astype(np.uint8) for o in objects]
        return [(255 * resize(o, (side, side), order=1, mode="edge",
                              anti_aliasing=side < DIGIT)).astype(np.uint8) for o in objects]

    def _objects(self, i: int, level: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Top-left corners (M, 2) at ``level`` and blocks of image ``i``'s
        objects, in painting order (digits, then noise overwriting them)."""
        key = (i, level)
        if key not in self._blocks:
            if len(self._blocks) > 64:
                self._blocks.clear()
            ds, f = self.dataset, self.k / 2 ** level
            side = max(1, round(DIGIT * f))
            digits = self._resized([ds._digit(j) for j in ds.digit_indices[i]], side)
            corners = [np.rint(ds.positions[i] * f)]
            if ds.noise:
                bank_key = ("noise", level)
                if bank_key not in self._blocks:
                    self._blocks[bank_key] = self._resized(list(ds.noise_patterns), side)
                bank = self._blocks[bank_key]
                digits = digits + [bank[k] for k in ds.noise_ids[i]]
                corners.append(np.rint(ds.noise_positions[i] * f))
            self._blocks[key] = [np.concatenate(corners).astype(np.int64), *digits]
        found = self._blocks[key]
        return found[0], found[1:]

    def render(self, i: int, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """uint8 (h, w): the region at (y, x) of image ``i`` at ``level``."""
        corners, blocks = self._objects(i, level)
        out = np.zeros((h, w), np.uint8)
        side = blocks[0].shape[0]
        hit = ((corners[:, 0] < y + h) & (corners[:, 0] + side > y) &
               (corners[:, 1] < x + w) & (corners[:, 1] + side > x))
        for m in np.flatnonzero(hit):  # in painting order
            r, c = corners[m]
            y0, y1 = max(r, y), min(r + side, y + h)
            x0, x1 = max(c, x), min(c + side, x + w)
            out[y0 - y:y1 - y, x0 - x:x1 - x] = blocks[m][y0 - r:y1 - r, x0 - c:x1 - c]
        return out


def make_mega_mnist(out: Path, *, width: int, height: int, n_train: int, n_test: int,
                    fmt: str = "tiff", scale: float | None = None, noise: bool = True,
                    seed: int = 0, tile: int = 256, compression: str | None = "zlib",
                    data_dir: str | None = None, jobs: int = 1,
                    log=lambda message: None) -> dict:
    """Write the data set into ``out`` (``train/``, ``test/``, ``labels.csv``);
    returns what was written. See the module docstring."""
    from ats.data.mnist import load_mnist
    from tasks.mega_mnist.data import MegapixelMNIST

    k = float(scale) if scale is not None else max(1.0, min(width, height) / PAPER_SIDE)
    virtual = (max(2 * DIGIT, round(height / k)), max(2 * DIGIT, round(width / k)))
    n_noise = round(PAPER_NOISE * virtual[0] * virtual[1] / PAPER_SIDE ** 2)
    if (out / "labels.csv").exists():
        raise click.ClickException(f"{out} already holds a data set (labels.csv); choose "
                                   "another --out")
    rows: list[tuple[str, int, str]] = []
    started = time.time()
    suffix = {"tiff": ".tif", "npy": ".npy"}[fmt]
    for split, n in (("train", n_train), ("test", n_test)):
        digits = load_mnist(split, data_dir)
        dataset = MegapixelMNIST(digits.images, digits.labels, n_samples=n, width=virtual[1],
                                 height=virtual[0], scale=1.0, noise=noise, n_noise=n_noise,
                                 seed=seed, train=split == "train")
        canvas = ScaledCanvas(dataset, k, (height, width))
        (out / split).mkdir(parents=True, exist_ok=True)
        names = [f"{split}/{i:05d}{suffix}" for i in range(n)]
        work = [(i, out / name, fmt, tile, compression) for i, name in enumerate(names)]
        global _CANVAS
        _CANVAS = canvas  # forked workers inherit it: the digits are not pickled per image
        if jobs > 1 and n > 1:
            import multiprocessing

            with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
                for name in pool.map(_write_one, work):
                    log(f"wrote {name}")
        else:
            for item in work:
                log(f"wrote {_write_one(item)}")
        rows += [(name, int(t), split) for name, t in zip(names, dataset.targets)]
    tmp = out / "labels.csv.part"
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
    os.replace(tmp, out / "labels.csv")
    return {"images": len(rows), "scale": k, "virtual_canvas": virtual, "n_noise": n_noise,
            "seconds": time.time() - started, "patch_size": round(50 * k),
            "bytes": sum(p.stat().st_size for p in out.rglob(f"*{suffix}"))}


_CANVAS: ScaledCanvas | None = None


def _write_one(item: tuple) -> str:
    i, path, fmt, tile, compression = item
    canvas = _CANVAS

    def render(level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        return canvas.render(i, level, y, x, h, w)

    if fmt == "tiff":
        write_tiff_pyramid(path, canvas.shape, 1, np.uint8, render, tile=tile,
                           compression=compression)
    else:
        write_npy(path, canvas.shape, 1, np.uint8, render)
    return str(path)


@click.command(name="mega_mnist")
@click.option("--width", type=click.IntRange(min=56), default=PAPER_SIDE, show_default=True)
@click.option("--height", type=click.IntRange(min=56), default=PAPER_SIDE, show_default=True)
@click.option("--n-train", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--n-test", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["tiff", "npy"]), default="tiff",
              show_default=True, help="tiff: compressed tiled pyramid; npy: uncompressed, "
                                      "one level (a memory map when read).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder to write (train/, test/, labels.csv).")
@click.option("--digit-scale", "scale", type=click.FloatRange(min=1.0), default=None,
              help="Object scale k (default: the canvas side / 1500, at least 1).")
@click.option("--noise/--no-noise", default=True, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--tile", type=click.IntRange(min=16), default=256, show_default=True)
@click.option("--compression", type=click.Choice(["zlib", "none"]), default="zlib",
              show_default=True)
@click.option("--data-dir", default=None, help="Where the MNIST files are (else $ATS_DATA_DIR, "
                                               "the user cache, or downloaded).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Images written at once (processes).")
def mega_mnist_command(width, height, n_train, n_test, fmt, out, scale, noise, seed, tile,
                       compression, data_dir, jobs) -> None:
    """Megapixel MNIST at any size as tiled pyramidal TIFFs (or .npy), with
    the labels.csv that `ats-run --task images` reads."""
    result = make_mega_mnist(Path(out), width=width, height=height, n_train=n_train,
                             n_test=n_test, fmt=fmt, scale=scale, noise=noise, seed=seed,
                             tile=tile, compression=None if compression == "none" else compression,
                             data_dir=data_dir, jobs=jobs, log=lambda m: click.echo(m, err=True))
    click.echo(f"{result['images']} images of {height}x{width} in {out} "
               f"({result['bytes'] / 2**20:,.1f} MiB, {result['seconds']:.1f} s); objects x"
               f"{result['scale']:.3g}, {result['n_noise']} noise placements each")
    click.echo(f"train: ats-run --task images --data-dir {out} --set data.channels=1 "
               f"--patch-size {result['patch_size']} --n-patches 10")
