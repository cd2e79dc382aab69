"""Speed limits (Swedish Traffic Signs, ATS_SPEC section 3.2): the data layer.

The task plugin (networks, defaults, registration) is added separately; this
package only re-exports the dataset API so that importing it stays light.
See :mod:`tasks.speed_limits.data` for the expected files, the filtering
and the item format.
"""

from .data import (
    CLASSES,
    EXPECTED_COUNTS,
    IMAGE_SIZE,
    LAYOUT,
    LIMITS,
    VISIBILITY,
    AnnotationIssue,
    ImageAnnotation,
    Sign,
    SpeedLimits,
    class_weights,
    default_augmentations,
    find_root,
    label_of,
    make_datasets,
    parse_annotations,
    parse_number,
    set_name,
)

__all__ = [
    "CLASSES",
    "EXPECTED_COUNTS",
    "IMAGE_SIZE",
    "LAYOUT",
    "LIMITS",
    "VISIBILITY",
    "AnnotationIssue",
    "ImageAnnotation",
    "Sign",
    "SpeedLimits",
    "class_weights",
    "default_augmentations",
    "find_root",
    "label_of",
    "make_datasets",
    "parse_annotations",
    "parse_number",
    "set_name",
]
