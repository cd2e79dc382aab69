"""Where the real data sets are, if anywhere: ``$ATS_DATA_DIR``, then ``../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def real_root(find_root: Callable[[str], Path]) -> Path | None:
    """The data set's root found by ``find_root`` in the usual places, or None."""
    for d in (os.environ.get("ATS_DATA_DIR"), SHARED_DATA):
        if d:
            try:
                return find_root(d)
            except FileNotFoundError:
                pass
    return None
