"""Built-in plugins. Importing this package registers them.

Heavy dependencies (numba) are imported on first use, not here.
"""

from ats.plugins import extractors, networks, samplers  # noqa: F401  (registers)
