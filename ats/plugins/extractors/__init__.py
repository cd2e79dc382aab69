"""Patch-extraction backends: ``reference`` (oracle loop), ``numba`` (parallel
CPU), ``torch`` (vectorised indexing, CUDA or CPU) and ``auto``."""

from ats.plugins.extractors import auto, numba, reference, torch  # noqa: F401  (registers)
