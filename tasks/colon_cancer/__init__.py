"""Colon cancer histopathology (CRCHistoPhenotypes, ATS_SPEC section 3.3): the data layer.

The task plugin (networks, defaults, registration) is added separately; this
package only re-exports the dataset API so that importing it stays light.
See :mod:`tasks.colon_cancer.data` for the expected files, the k-fold
protocol and the item format.
"""

from .data import (
    IMAGE_SIZE,
    LAYOUT,
    N_IMAGES,
    ColonCancer,
    default_augmentations,
    find_root,
    k_fold_split,
    make_datasets,
    read_label,
    scan_images,
)

__all__ = [
    "IMAGE_SIZE",
    "LAYOUT",
    "N_IMAGES",
    "ColonCancer",
    "default_augmentations",
    "find_root",
    "k_fold_split",
    "make_datasets",
    "read_label",
    "scan_images",
]
