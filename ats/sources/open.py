"""Opening an image source: :func:`open_source` picks the plugin that can.

Plugins are the :class:`~ats.sources.Source` classes registered in
:data:`ats.registry.source`; each says what it accepts (a type, a file
suffix, a directory layout) and they are tried in the order of their
``priority``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ats.registry import source as source_registry
from ats.sources.base import Source

__all__ = ["open_source", "supported_formats"]


def open_source(obj: Any, *, plugin: str | None = None, **options: Any) -> Source:
    """An image source for ``obj``: a path, an array, a tensor, a zarr object
    or a :class:`Source` (returned as is).

    Args:
        plugin: a registered source name to use instead of the first that
            accepts ``obj`` (e.g. ``"openslide"`` for a ``.tif`` slide).
        options: keyword arguments of that source (e.g. ``layout="HWC"``).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: no plugin accepts ``obj`` (the message lists the
            supported formats), or the file is not a readable image
            (:class:`~ats.sources.SourceError`, naming it).
    """
    if isinstance(obj, Source):
        return obj
    if plugin is not None:
        return _checked(source_registry.get(plugin)(obj, **options), plugin)
    if isinstance(obj, (str, os.PathLike)) and not Path(obj).exists():
        raise FileNotFoundError(f"image file not found: {os.fspath(obj)}")
    for name, cls in _ordered():
        if cls.accepts(obj):
            return _checked(cls(obj, **options), name)
    what = f"file {os.fspath(obj)!r}" if isinstance(obj, (str, os.PathLike)) else \
        f"a {type(obj).__name__}"
    raise ValueError(f"no image source reads {what}; supported:\n{supported_formats()}")


def supported_formats() -> str:
    """One line per source plugin: its name and what it reads."""
    return "\n".join(f"  - {name}: {getattr(cls, 'formats', '') or cls.__doc__}"
                     for name, cls in _ordered())


def _ordered() -> list[tuple[str, type]]:
    items = [(n, c) for n, c in source_registry.items() if isinstance(c, type)]
    return sorted(items, key=lambda item: (getattr(item[1], "priority", 100), item[0]))


def _checked(obj: Any, name: str) -> Source:
    if not isinstance(obj, Source):
        raise TypeError(f"source plugin {name!r} built a {type(obj).__name__}, not an "
                        "ats.sources.Source")
    return obj
