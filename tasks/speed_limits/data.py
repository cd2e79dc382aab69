"""Speed limits: the Swedish Traffic Signs data set, one split as a dataset of lazily read images.

Where the files come from and how they are laid out, the Set1/Set2 split,
the item format, the colour order, the augmentation and the handling of
missing images: docs/tasks/speed_limits.md. The annotation files and the
label filter are :mod:`tasks.speed_limits.annotations` (re-exported here).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from ats.data.image_dataset import ImageFileDataset
from ats.data.locate import format_tried, search_data_dirs
from ats.data.transforms import Augmentation, ImageLinearTransform, ImagePan
from tasks.speed_limits.annotations import (
    ANNOTATIONS,
    CLASSES,
    LAYOUT,
    LIMITS,
    VISIBILITY,
    AnnotationIssue,
    ImageAnnotation,
    Sign,
    label_of,
    parse_annotations,
    parse_number,
)

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

#: (H, W) of every image of the data set.
IMAGE_SIZE: tuple[int, int] = (960, 1280)
#: Images left after filtering, per split, with split_seed=0 (docs/tasks/speed_limits.md, "Split").
EXPECTED_COUNTS: dict[str, int] = {"train": 747, "test": 684}
#: Folder names tried under a data directory by :func:`find_root`.
ROOT_NAMES: tuple[str, ...] = ("speed_limits", "traffic_signs", "swedish_traffic_signs")


# --------------------------------------------------------------------------- locating the data


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
    (docs/tasks/speed_limits.md, "Class weights"), so they are optional.
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
    """One split of the speed-limits task, images read lazily (see docs/tasks/speed_limits.md).

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
