"""Image sources (docs/sources.md): ``array``, ``npy``, ``tiff``, ``zarr``,
``openslide`` and ``pillow``. Their libraries are imported on first use."""

from ats.plugins.sources import array, openslide, pillow, tiff, zarr  # noqa: F401  (registers)
