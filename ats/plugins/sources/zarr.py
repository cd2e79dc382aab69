"""The ``zarr`` source: zarr arrays and OME-NGFF multiscale groups.

A tile is a chunk of the level's array (a chunk is what zarr stores and
decodes as one piece). An OME-NGFF group (``multiscales`` in its attributes,
v0.4, or under ``ome``, v0.5) gives the levels in the order of its
``datasets`` and names the axes: ``y`` and ``x`` are the image, ``c`` the
channels, and any other axis must have length 1. A plain array is
``(H, W)``, ``(C, H, W)`` or ``(H, W, C)`` as for ``.npy`` files.
zarr is imported on first use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ats.plugins.sources.array import Layout, chw_layout
from ats.registry import source
from ats.sources.base import Source, SourceError, file_identity

__all__ = ["ZarrSource"]


def _zarr() -> Any:
    try:
        import zarr
    except ImportError:  # pragma: no cover - a declared dependency
        raise ImportError("reading zarr needs the zarr package: pip install zarr") from None
    return zarr


@source.register("zarr")
class ZarrSource(Source):
    """A zarr array or an OME-NGFF multiscale group (a directory or an opened object)."""

    name = "zarr"
    formats = "zarr arrays and OME-NGFF multiscale groups (.zarr directories, zarr objects)"
    suffixes = (".zarr", ".ome.zarr")
    priority = 40

    def __init__(self, obj: str | os.PathLike | Any, *, layout: Layout = "auto") -> None:
        if isinstance(obj, (str, os.PathLike)):
            self.path = os.fspath(obj)
            if not Path(self.path).exists():
                raise FileNotFoundError(f"image file not found: {self.path}")
            self._object = None
        else:
            self.path, self._object = None, obj
        self.layout = layout
        try:
            arrays, axes = self.handle()
        except (SourceError, FileNotFoundError):
            raise
        except Exception as exc:
            raise SourceError(f"cannot read {self.describe()} as zarr: "
                              f"{type(exc).__name__}: {exc}") from exc
        first = arrays[0]
        C = first.shape[axes["c"]] if axes["c"] is not None else 1
        shapes = [(a.shape[axes["y"]], a.shape[axes["x"]]) for a in arrays]
        tiles = [(min(a.chunks[axes["y"]], h), min(a.chunks[axes["x"]], w))
                 for a, (h, w) in zip(arrays, shapes)]
        self._axes = axes
        self._set_header((C, *shapes[0]), first.dtype, shapes, tiles)

    @classmethod
    def accepts(cls, obj: Any) -> bool:
        if isinstance(obj, (str, os.PathLike)):
            p = Path(obj)
            return super().accepts(obj) or (p.is_dir() and any(
                (p / m).is_file() for m in ("zarr.json", ".zarray", ".zgroup")))
        module = type(obj).__module__ or ""
        return module.startswith("zarr.") and hasattr(obj, "attrs")

    def _open_handle(self) -> tuple[list[Any], dict[str, int | None]]:
        zarr = _zarr()
        node = self._object if self._object is not None else zarr.open(self.path, mode="r")
        attrs = dict(node.attrs)
        multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
        if multiscales:
            scale = multiscales[0]
            arrays = [node[d["path"]] for d in scale["datasets"]]
            names = [a["name"] if isinstance(a, dict) else a for a in scale.get("axes", [])]
            axes = _named_axes(names or ["y", "x"][-arrays[0].ndim:], arrays[0].shape,
                               self.describe())
        elif hasattr(node, "shape"):
            arrays = [node]
            kind = chw_layout(tuple(node.shape), self.layout, self.describe())
            axes = {"HW": {"c": None, "y": 0, "x": 1}, "CHW": {"c": 0, "y": 1, "x": 2},
                    "HWC": {"c": 2, "y": 0, "x": 1}}[kind]
        else:
            raise SourceError(f"{self.describe()} is a zarr group without OME-NGFF "
                              "'multiscales' metadata; open one of its arrays instead")
        return arrays, axes

    def _read_tile(self, level: int, ty: int, tx: int) -> np.ndarray:
        arrays, axes = self.handle()
        a = arrays[level]
        th, tw = self.tile_shapes[level]
        index: list[Any] = [0] * a.ndim
        index[axes["y"]] = slice(ty * th, (ty + 1) * th)
        index[axes["x"]] = slice(tx * tw, (tx + 1) * tw)
        if axes["c"] is not None:
            index[axes["c"]] = slice(None)
        region = np.asarray(a[tuple(index)])
        # the remaining axes, in array order, are (c,) y and x: put them in that order
        kept_axes = sorted(axes[k] for k in ("c", "y", "x") if axes[k] is not None)
        order = [kept_axes.index(axes[k]) for k in ("c", "y", "x") if axes[k] is not None]
        region = np.transpose(region, order)
        if axes["c"] is None:
            region = region[None]
        return np.ascontiguousarray(region, dtype=self.dtype)

    def identity(self) -> tuple | None:
        if self.path is None:
            return None
        p = Path(self.path)
        meta = next((p / m for m in ("zarr.json", ".zattrs", ".zarray", ".zgroup")
                     if (p / m).is_file()), p)
        return (self.name, *file_identity(p), file_identity(meta)[2])

    def describe(self) -> str:
        return f"zarr source {self.path}" if self.path else "zarr source (in memory)"


def _named_axes(names: list[str], shape: tuple[int, ...], what: str) -> dict[str, Any]:
    """Positions of ``c``, ``y``, ``x`` among the axis ``names``; every other
    axis must have length 1."""
    names = [n.lower() for n in names]
    if len(names) != len(shape) or "y" not in names or "x" not in names:
        raise SourceError(f"{what}: axes {names} do not describe the array of shape {shape} "
                          "with 'y' and 'x' axes")
    extra = [n for i, n in enumerate(names) if n not in ("c", "y", "x") and shape[i] != 1]
    if extra:
        raise SourceError(f"{what}: axes {extra} are longer than 1; only 2-D images (with "
                          "channels) are sources")
    return {"c": names.index("c") if "c" in names else None, "y": names.index("y"),
            "x": names.index("x")}
