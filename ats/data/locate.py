"""Finding a data set's folder from ``--data-dir`` and ``$ATS_DATA_DIR``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

__all__ = ["search_data_dirs", "format_tried"]


def search_data_dirs(
    data_dir: str | os.PathLike | None,
    names: Sequence[str],
    locate: Callable[[Path], Path | None],
) -> tuple[Path | None, list[Path]]:
    """Try ``D`` and ``D/<name>`` for ``D`` in (``data_dir``, ``$ATS_DATA_DIR``).

    Args:
        names: sub-folder names worth trying under each ``D``.
        locate: a candidate folder -> the data set's root in it, or None.

    Returns:
        (the first root found or None, every candidate tried, in order) so
        that callers can name the places in their error message.
    """
    bases = [Path(d).expanduser() for d in (data_dir, os.environ.get("ATS_DATA_DIR")) if d]
    tried: list[Path] = []
    for base in bases:
        for candidate in (base, *(base / n for n in names)):
            tried.append(candidate)
            found = locate(candidate)
            if found is not None:
                return found, tried
    return None, tried


def format_tried(tried: Sequence[Path]) -> str:
    """The places tried, one per line, for an error message."""
    return "\n".join(f"  - {t}" for t in tried) or "  (no data_dir given and $ATS_DATA_DIR not set)"
