"""Built-in plugins. Importing this package registers them.

Heavy dependencies (numba, tifffile, zarr, OpenSlide) are imported on first
use, not here.
"""

from ats.plugins import extractors, models, networks, samplers, sources  # noqa: F401  (registers)
