"""The ``auto`` extractor: the best backend for where ``x`` lives.

numba for host memory (CPU tensors, numpy arrays, memory maps), torch
indexing for accelerator tensors (CUDA, ...). Both are looked up in the
registry, so overriding ``numba`` or ``torch`` there also changes ``auto``.
"""

from __future__ import annotations

import numpy as np
import torch

from ats.core.extract import Array, Extractor
from ats.registry import extractor


@extractor.register("auto")
class AutoExtractor(Extractor):
    """Delegates to ``numba`` on the host and ``torch`` elsewhere."""

    name = "auto"

    def __init__(self) -> None:
        self._backends: dict[str, Extractor] = {}

    def choose(self, x: Array) -> Extractor:
        """The backend that :meth:`extract` uses for ``x``."""
        host = isinstance(x, np.ndarray) or x.device.type == "cpu"
        name = "numba" if host else "torch"
        if name not in self._backends:
            self._backends[name] = extractor.build(name)
        return self._backends[name]

    def supports(self, x: Array) -> bool:
        return self.choose(x).supports(x)

    def unsupported_reason(self, x: Array) -> str:
        return self.choose(x).unsupported_reason(x)

    def extract(
        self,
        x: Array,
        offsets: torch.Tensor,
        patch_size: tuple[int, ...],
        as_float: bool,
    ) -> torch.Tensor:
        return self.choose(x).extract(x, offsets, patch_size, as_float)

    def extract_into(self, x: Array, offsets: torch.Tensor, patch_size: tuple[int, ...],
                     out: torch.Tensor) -> torch.Tensor:
        return self.choose(x).extract_into(x, offsets, patch_size, out)
