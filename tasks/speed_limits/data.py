"""Speed limits (ATS_SPEC section 3.2): the Swedish Traffic Signs data layer.

**Data.** The Linköping University *Swedish Traffic Signs* data set (Larsson &
Felsberg, SCIA 2011), the "summer" sets, from the page "Swedish Traffic Signs
Dataset" of the Computer Vision Laboratory (CVL), Linköping University
(``www.isy.liu.se/cvl/research/trafficSigns/``). Nothing is downloaded here.
Download ``Set1/Set1Part0.zip`` with ``Set1/annotations.txt`` and
``Set2/Set2Part0.zip`` with ``Set2/annotations.txt`` and arrange them as::

    <root>/Set1/annotations.txt
    <root>/Set1/*.jpg          (Set1Part0.zip extracted here)
    <root>/Set2/annotations.txt
    <root>/Set2/*.jpg          (Set2Part0.zip extracted here)

Images are 1280x960 (W x H) JPEGs, i.e. arrays ``(960, 1280, 3)``. With the
default ``split_seed=0`` the train split is ``Set1`` and the test split
``Set2`` (the original rule ``Set{1 + ((seed + 1 + train) % 2)}``). The
served annotation files changed over the years (their md5s differ from the
original script's), so the check is on the filtered counts instead:
**747 train / 684 test** images.

**Annotations.** One line per image, ``filename:sign;sign;...``; each sign is
``VISIBILITY, x2, y2, x1, y1, TYPE, NAME`` with ``(x2, y2)`` the bottom-right
and ``(x1, y1)`` the top-left corner in pixels. Entries whose first field is
``MISC_SIGNS`` are skipped. Numbers with trailing garbage are repaired by
dropping trailing characters until they parse (the original ``_read_bbox``).
A line that the original would have crashed on (no ``:``, a sign with fewer
than 7 fields, a number that no stripping repairs) is skipped and reported in
:attr:`SpeedLimits.issues` as an :class:`AnnotationIssue` ``(file, line,
reason, action)``, with one ``UserWarning`` summarising them; the rest loads.
The whole line is skipped rather than the one sign because a damaged sign may
be the speed limit that decides the label. Repairs and other oddities that
the original accepted are reported with ``action="repaired"``/``"kept"``.

**Filtering** (``SpeedLimits._filter/_acceptable`` of the original), classes
``[EMPTY, 50_SIGN, 70_SIGN, 80_SIGN]``:

1. an image with no (non-MISC) sign is ``EMPTY`` (0);
2. otherwise only its 50/70/80 signs are kept; if none remain it is dropped
   (this drops images with other signs, including other speed limits);
3. these are sorted by (visibility index in ``VISIBILITY`` ascending, bbox
   area descending; ties keep the file order); if the first is not
   ``VISIBLE`` the image is dropped;
4. otherwise its class is the label.

**Items** are dicts:

* ``x_high``: ``(3, 960, 1280)``; ``uint8`` (0..255 standing for ``v/255``)
  when the dataset does not augment, ``float32`` on the [0, 1] scale when it
  does (also for the items whose draws changed nothing, so that a batch never
  mixes the two scales);
* ``x_low``: ``float32 (3, 288, 384)`` = bilinear resize of the (augmented)
  ``x_high`` on the [0, 1] scale to ``scaled_size((960, 1280), 0.3)``, TF1
  ``asymmetric`` coordinates by default (the original; the port used
  ``half_pixel``);
* ``y``: the class (int), ``index``: the item's position in the dataset (int).

**Colour order.** RGB (Pillow). The original read images with ``cv2.imread``,
i.e. BGR; ``bgr=True`` flips the channels to reproduce that.

**Augmentation** (train split by default): ``ImageLinearTransform`` (a*x+b,
a~U(0.8,1.2), b~U(-0.1,0.1), p=0.8, no clipping) then ``ImagePan`` (+-100 px
in x and y, p=0.8, zero fill), applied to ``x_high`` before ``x_low`` is made
from it. The randomness of item ``i`` comes from
``default_rng((seed, epoch, i))``; call :meth:`SpeedLimits.set_epoch` each
epoch (with persistent DataLoader workers the call does not reach copies
already living in the workers).

**Missing images.** A kept image that is listed but not on disk raises a
``FileNotFoundError`` naming it at construction (``missing="error"``, the
default: a silently smaller test set would change the reported numbers);
``missing="skip"`` drops it and records an issue instead. Images dropped by
the filter are never read, so they need not exist.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ats.data.image_dataset import ImageFileDataset
from ats.data.locate import format_tried, search_data_dirs
from ats.data.transforms import Augmentation, ImageLinearTransform, ImagePan

__all__ = [
    "CLASSES",
    "LIMITS",
    "VISIBILITY",
    "IMAGE_SIZE",
    "EXPECTED_COUNTS",
    "LAYOUT",
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

LIMITS: tuple[str, ...] = ("50_SIGN", "70_SIGN", "80_SIGN")
#: Class names, indexed by label.
CLASSES: tuple[str, ...] = ("EMPTY", *LIMITS)
#: Visibilities in the sort order of the filter (best first).
VISIBILITY: tuple[str, ...] = ("VISIBLE", "BLURRED", "SIDE_ROAD", "OCCLUDED")
#: (H, W) of every image of the data set.
IMAGE_SIZE: tuple[int, int] = (960, 1280)
#: Images left after filtering, per split, with split_seed=0 (ATS_SPEC 3.2).
EXPECTED_COUNTS: dict[str, int] = {"train": 747, "test": 684}
ANNOTATIONS = "annotations.txt"
#: Folder names tried under a data directory by :func:`find_root`.
ROOT_NAMES: tuple[str, ...] = ("speed_limits", "traffic_signs", "swedish_traffic_signs")

LAYOUT = (
    "Expected layout (Linköping University 'Swedish Traffic Signs Dataset', summer sets,\n"
    "CVL page www.isy.liu.se/cvl/research/trafficSigns/):\n"
    "  <root>/Set1/annotations.txt   <root>/Set1/*.jpg   (Set1Part0.zip extracted there)\n"
    "  <root>/Set2/annotations.txt   <root>/Set2/*.jpg   (Set2Part0.zip extracted there)\n"
    "Nothing is downloaded automatically."
)


# --------------------------------------------------------------------------- annotations


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
    """The filter of ATS_SPEC 3.2 for one image: ``(label, why)``; label None means dropped.

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


def set_name(split: str, split_seed: int = 0) -> str:
    """The folder of a split: ``Set{1 + ((split_seed + 1 + train) % 2)}`` (train=Set1 for seed 0)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return f"Set{1 + ((int(split_seed) + 1 + int(split == 'train')) % 2)}"


def find_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The first directory holding ``Set1`` or ``Set2`` among ``D`` and ``D/{speed_limits,traffic_signs,...}``.

    ``D`` is ``data_dir`` then ``$ATS_DATA_DIR``. Raises ``FileNotFoundError``
    listing the places tried and the expected layout.
    """
    found, tried = search_data_dirs(
        data_dir, ROOT_NAMES,
        lambda cand: cand if (cand / "Set1").is_dir() or (cand / "Set2").is_dir() else None)
    if found is not None:
        return found
    where = format_tried(tried)
    raise FileNotFoundError(f"Swedish Traffic Signs data not found. Looked in:\n{where}\n{LAYOUT}")


# --------------------------------------------------------------------------- dataset


def default_augmentations() -> list[Augmentation]:
    """The original training augmentation: a*x+b (p .8), then pan +-100 px in x and y (p .8)."""
    return [ImageLinearTransform((0.8, 1.2), (-0.1, 0.1), p=0.8),
            ImagePan(100, horizontally=True, vertically=True, p=0.8)]


def class_weights(targets: Sequence[int] | np.ndarray, n_classes: int = len(CLASSES)) -> np.ndarray:
    """``(1 / K) / freq_c`` per class (float32, ``(K,)``); 0 for a class absent from ``targets``.

    Weights of this form make every class contribute equally to a weighted
    loss. The original passed them as an array Keras most likely ignored
    (ATS_SPEC 3.2), so they are optional.
    """
    t = np.asarray(targets, dtype=np.int64).reshape(-1)
    if t.size == 0:
        raise ValueError("targets is empty: cannot compute class frequencies")
    if t.min() < 0 or t.max() >= n_classes:
        raise ValueError(f"targets must be in 0..{n_classes - 1}, got values in {t.min()}..{t.max()}")
    freq = np.bincount(t, minlength=n_classes) / t.size
    w = np.zeros(n_classes, dtype=np.float64)
    present = freq > 0
    w[present] = (1.0 / n_classes) / freq[present]
    return w.astype(np.float32)


def _warn_skipped(issues: Sequence[AnnotationIssue], what: str) -> None:
    """One UserWarning summarising the skipped entries among ``issues`` (none if nothing was skipped)."""
    skipped = [i for i in issues if i.action == "skipped"]
    if skipped:
        first = "; ".join(f"line {i.line}: {i.reason}" for i in skipped[:3])
        more = " ..." if len(skipped) > 3 else ""
        warnings.warn(f"{len(skipped)} {what} skipped (see .issues): {first}{more}", UserWarning, stacklevel=3)


class SpeedLimits(ImageFileDataset):
    """One split of the speed-limits task, images read lazily (see the module docstring).

    Items, :meth:`set_epoch`, :meth:`read_image` and :attr:`class_counts` come
    from :class:`~ats.data.image_dataset.ImageFileDataset`; this class finds,
    filters and labels the images and, with ``bgr=True``, flips the channels.

    Args:
        root: the folder holding ``Set1``/``Set2`` (see :data:`LAYOUT`).
        split: ``"train"`` or ``"test"``.
        split_seed: the original's seed of the Set1/Set2 assignment (0: train=Set1).
        augment: apply ``augmentations`` to ``x_high``; default True for train, False for test.
        augmentations: the pipeline, default :func:`default_augmentations`.
        seed: seed of the per-item augmentation generators.
        scale: the low view is ``scaled_size(image_size, scale)`` (0.3 -> 288x384).
        resize_coordinates: ``"asymmetric"`` (TF1, original) or ``"half_pixel"``.
        bgr: return channels in BGR order, as the original's ``cv2.imread``.
        missing: ``"error"`` or ``"skip"`` for kept images absent from disk.
        check_images: read every kept image's header at construction and raise
            on a wrong size (cheap: no decoding); the size is checked on decode anyway.
        cache: keep decoded ``uint8`` images in memory (about 3.7 MB each,
            2.8 GB for the train split; one cache per DataLoader worker).
        image_size: expected ``(H, W)``; only tests should change it.

    Attributes:
        annotations: the kept images' :class:`ImageAnnotation`, in dataset order.
        targets: ``int64 (N,)`` labels. paths: image paths.
        issues: :class:`AnnotationIssue` list (annotation file and missing images).
        counts: how many lines were read and why images were kept or dropped.
    """

    num_classes = len(CLASSES)  #: 4: EMPTY and the three speed limits

    def __init__(self, root: str | os.PathLike, split: str = "train", *, split_seed: int = 0,
                 augment: bool | None = None, augmentations: Sequence[Augmentation] | None = None,
                 seed: int = 0, scale: float = 0.3, resize_coordinates: str = "asymmetric",
                 bgr: bool = False, missing: str = "error", check_images: bool = True,
                 cache: bool = False, image_size: tuple[int, int] = IMAGE_SIZE) -> None:
        if missing not in ("error", "skip"):
            raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
        self.root = Path(root).expanduser()
        self.split = split
        self.set_name = set_name(split, split_seed)
        super().__init__(split=split, image_size=image_size, scale=scale,
                         resize_coordinates=resize_coordinates, augment=augment,
                         augmentations=augmentations, default_augmentations=default_augmentations,
                         seed=seed, cache=cache)
        self.bgr = bool(bgr)

        folder = self.root / self.set_name
        if not folder.is_dir():
            raise FileNotFoundError(f"{self.set_name} folder not found: {folder} (needed for the "
                                    f"{split} split)\n{LAYOUT}")
        annotations, self.issues = parse_annotations(folder / ANNOTATIONS)
        _warn_skipped(self.issues, f"annotation line(s) of {folder / ANNOTATIONS}")

        counts = {"listed": len(annotations), "skipped_lines": sum(i.action == "skipped" for i in self.issues),
                  "empty": 0, "speed_limit": 0, "no_speed_limit": 0, "not_visible": 0, "missing": 0}
        kept: list[tuple[ImageAnnotation, int]] = []
        for ann in annotations:
            label, why = label_of(ann.signs)
            counts[why] += 1
            if label is not None:
                kept.append((ann, label))

        missing_files = [(ann, lab) for ann, lab in kept if not (folder / ann.filename).is_file()]
        if missing_files and missing == "error":
            names = ", ".join(a.filename for a, _ in missing_files[:10])
            more = f" and {len(missing_files) - 10} more" if len(missing_files) > 10 else ""
            raise FileNotFoundError(f"{len(missing_files)} image(s) listed in {folder / ANNOTATIONS} "
                                    f"are missing from {folder}: {names}{more}\n"
                                    f"(pass missing='skip' to drop them)\n{LAYOUT}")
        missing_issues = [AnnotationIssue(str(folder / ANNOTATIONS), ann.line,
                                          f"image {folder / ann.filename} not found", "skipped")
                          for ann, _ in missing_files]
        _warn_skipped(missing_issues, f"missing image(s) of {folder}")
        self.issues.extend(missing_issues)
        counts["missing"] = len(missing_files)
        missing_ids = {id(a) for a, _ in missing_files}
        kept = [(a, lab) for a, lab in kept if id(a) not in missing_ids]

        self.annotations = [a for a, _ in kept]
        self.targets = np.array([lab for _, lab in kept], dtype=np.int64)
        self.paths = [folder / a.filename for a in self.annotations]
        counts["kept"] = len(kept)
        self.counts = counts

        if check_images:
            self._check_sizes()

    # ------------------------------------------------------------------ properties

    @property
    def class_frequencies(self) -> np.ndarray:
        return self.class_counts / max(len(self), 1)

    def class_weights(self) -> np.ndarray:
        """``(1/4) / freq_c``, see :func:`class_weights`."""
        return class_weights(self.targets, len(CLASSES))

    # ------------------------------------------------------------------ items

    def _decode(self, i: int) -> np.ndarray:
        """Image ``i`` decoded: ``uint8 (H, W, 3)``, RGB (BGR with ``bgr=True``)."""
        img = super()._decode(i)
        return np.ascontiguousarray(img[..., ::-1]) if self.bgr else img

    def __repr__(self) -> str:
        return (f"SpeedLimits({self.split}={self.set_name}, n={len(self)}, classes={self.class_counts.tolist()}, "
                f"augment={self.augment}, seed={self.seed}, epoch={self.epoch})")


def make_datasets(data_dir: str | os.PathLike | None = None, *, seed: int = 0, augment: bool = True,
                  **kwargs) -> tuple[SpeedLimits, SpeedLimits]:
    """The (train, test) pair; ``data_dir`` is resolved by :func:`find_root`.

    ``augment`` applies to the train split only; the test split never augments.
    Other keyword arguments go to both :class:`SpeedLimits`.
    """
    root = find_root(data_dir)
    train = SpeedLimits(root, "train", seed=seed, augment=augment, **kwargs)
    test = SpeedLimits(root, "test", seed=seed, augment=False, **kwargs)
    return train, test
