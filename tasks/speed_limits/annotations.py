"""The annotation files of the Swedish Traffic Signs data set: format, parser and label filter.

The format, the repairs and the filter (the original ``speed_limits.py``'s
``_read_bbox`` and ``SpeedLimits._filter/_acceptable``) are described in
docs/tasks/speed_limits.md, "Annotation format" and "Filtering".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = [
    "ANNOTATIONS",
    "CLASSES",
    "LAYOUT",
    "LIMITS",
    "VISIBILITY",
    "AnnotationIssue",
    "ImageAnnotation",
    "Sign",
    "label_of",
    "parse_annotations",
    "parse_number",
]

LIMITS: tuple[str, ...] = ("50_SIGN", "70_SIGN", "80_SIGN")
#: Class names, indexed by label.
CLASSES: tuple[str, ...] = ("EMPTY", *LIMITS)
#: Visibilities in the sort order of the filter (best first).
VISIBILITY: tuple[str, ...] = ("VISIBLE", "BLURRED", "SIDE_ROAD", "OCCLUDED")
#: Name of the annotations file in each ``Set1``/``Set2`` folder.
ANNOTATIONS = "annotations.txt"

LAYOUT = (
    "Expected layout (Linköping University 'Swedish Traffic Signs Dataset', summer sets,\n"
    "CVL page www.isy.liu.se/cvl/research/trafficSigns/):\n"
    "  <root>/Set1/annotations.txt   <root>/Set1/*.jpg   (Set1Part0.zip extracted there)\n"
    "  <root>/Set2/annotations.txt   <root>/Set2/*.jpg   (Set2Part0.zip extracted there)\n"
    "Nothing is downloaded automatically."
)


@dataclass(frozen=True)
class Sign:
    """One annotated sign; coordinates in pixels of the full-resolution image."""

    visibility: str
    x_min: float
    y_min: float
    x_max: float
    y_max: float
    type: str
    name: str

    @property
    def area(self) -> float:
        """``(x_max - x_min) * (y_max - y_min)`` as the original (no abs: the sort must match)."""
        return (self.x_max - self.x_min) * (self.y_max - self.y_min)

    @property
    def visibility_index(self) -> int:
        """Position in :data:`VISIBILITY`; an unknown visibility ranks after all known ones."""
        return VISIBILITY.index(self.visibility) if self.visibility in VISIBILITY else len(VISIBILITY)


@dataclass(frozen=True)
class ImageAnnotation:
    """The signs of one annotated image (MISC_SIGNS entries already removed)."""

    filename: str
    signs: tuple[Sign, ...]
    line: int  #: 1-based line number in the annotations file


@dataclass(frozen=True)
class AnnotationIssue:
    """Something odd in an annotations file or on disk.

    ``action`` is ``"skipped"`` (the line/image is not used), ``"repaired"``
    (a number was fixed by the original's rule) or ``"kept"`` (used as the
    original would, but worth knowing).
    """

    file: str
    line: int
    reason: str
    action: str


def parse_number(text: str) -> tuple[float, bool]:
    """Parse a coordinate, dropping trailing characters until it parses (original ``_read_bbox``).

    Returns ``(value, repaired)``. Raises ``ValueError`` when nothing is left.
    """
    s = text.strip()
    while s:
        try:
            return float(s), s != text.strip()
        except ValueError:
            s = s[:-1]
    raise ValueError(f"not a number: {text!r}")


class _SkipLine(Exception):
    """A line that cannot be used; its message is the reason."""


def _parse_sign(entry: str, report: list[str]) -> Sign | None:
    """One ``VISIBILITY, x2, y2, x1, y1, TYPE, NAME`` entry; None for MISC_SIGNS."""
    parts = [p.strip() for p in entry.split(",")]
    if parts[0] == "MISC_SIGNS":
        return None
    if len(parts) < 7:
        raise _SkipLine(f"sign {entry.strip()!r} has {len(parts)} fields, expected 7 "
                        "(VISIBILITY, x2, y2, x1, y1, TYPE, NAME)")
    coords = []
    for p in parts[1:5]:
        try:
            value, repaired = parse_number(p)
        except ValueError:
            raise _SkipLine(f"sign {entry.strip()!r}: coordinate {p!r} is not a number") from None
        if repaired:
            report.append(f"repaired:coordinate {p!r} read as {value!r}")
        coords.append(value)
    if len(parts) > 7:
        report.append(f"kept:sign {entry.strip()!r} has {len(parts)} fields; extra fields ignored")
    if parts[0] not in VISIBILITY:
        report.append(f"kept:sign {entry.strip()!r} has unknown visibility {parts[0]!r} "
                      f"(known: {', '.join(VISIBILITY)}); ranked after them")
    x2, y2, x1, y1 = coords
    return Sign(visibility=parts[0], x_min=x1, y_min=y1, x_max=x2, y_max=y2, type=parts[5], name=parts[6])


def parse_annotations(path: str | os.PathLike) -> tuple[list[ImageAnnotation], list[AnnotationIssue]]:
    """Read an ``annotations.txt``: the images in file order and the issues found.

    Never raises for a malformed line (it is skipped and reported); raises
    ``FileNotFoundError`` when the file does not exist. Blank lines are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotations file not found: {path}\n{LAYOUT}")
    images: list[ImageAnnotation] = []
    issues: list[AnnotationIssue] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            report: list[str] = []
            try:
                if ":" not in line:
                    raise _SkipLine(f"no ':' separating the file name from the signs in {line!r}")
                filename, rest = line.split(":", 1)
                filename = filename.strip()
                if not filename:
                    raise _SkipLine(f"empty file name in {line!r}")
                signs = []
                for entry in rest.split(";"):
                    if not entry.strip():
                        continue
                    sign = _parse_sign(entry, report)
                    if sign is not None:
                        signs.append(sign)
            except _SkipLine as e:
                issues.append(AnnotationIssue(str(path), number, str(e), "skipped"))
                continue
            for r in report:
                action, reason = r.split(":", 1)
                issues.append(AnnotationIssue(str(path), number, reason, action))
            if filename in seen:
                # The original kept duplicates (it zips every line), so do we.
                issues.append(AnnotationIssue(str(path), number, f"{filename} already listed on line "
                                              f"{seen[filename]}; both entries kept", "kept"))
            seen.setdefault(filename, number)
            images.append(ImageAnnotation(filename, tuple(signs), number))
    return images, issues


def label_of(signs: Sequence[Sign]) -> tuple[int | None, str]:
    """The filter (docs/tasks/speed_limits.md, "Filtering") for one image: ``(label, why)``; None: dropped.

    ``why`` is ``"empty"``, ``"no_speed_limit"``, ``"not_visible"`` or ``"speed_limit"``.
    """
    if not signs:
        return 0, "empty"
    limits = sorted((s for s in signs if s.name in LIMITS), key=lambda s: (s.visibility_index, -s.area))
    if not limits:
        return None, "no_speed_limit"
    if limits[0].visibility != "VISIBLE":
        return None, "not_visible"
    return CLASSES.index(limits[0].name), "speed_limit"
