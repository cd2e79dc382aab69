"""Colon cancer histology: the CRCHistoPhenotypes images as one side of a k-fold split.

The files and accepted layouts, the label, the held-out protocol, the item
format and the augmentation: docs/tasks/colon_cancer.md.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ats.data.image_dataset import ImageFileDataset
from ats.data.locate import format_tried, search_data_dirs
from ats.data.transforms import Augmentation, ColorJitter, RandomDihedral

__all__ = [
    "IMAGE_SIZE",
    "N_IMAGES",
    "LAYOUT",
    "ColonCancer",
    "default_augmentations",
    "find_root",
    "k_fold_split",
    "make_datasets",
    "read_label",
    "scan_images",
]

IMAGE_SIZE: tuple[int, int] = (500, 500)  #: (H, W) of every image
N_IMAGES = 100  #: images in the data set
#: Sub-folders tried, in order, under a given root (docs/tasks/colon_cancer.md, "On-disk layout").
SUBDIRS: tuple[str, ...] = ("", "Classification", "CRCHistoPhenotypes_2016_04_28/Classification")
#: Folder names tried under a data directory by :func:`find_root`.
ROOT_NAMES: tuple[str, ...] = ("colon_cancer", "CRCHistoPhenotypes")

LAYOUT = (
    "Expected layout (CRCHistoPhenotypes_2016_04_28.zip, Sirinukunwattana et al. 2016, from the\n"
    "TIA Centre, University of Warwick; N = 1..100):\n"
    "  <root>/imgN/imgN.bmp  and  <root>/imgN/imgN_epithelial.mat\n"
    "or the same under <root>/Classification/ or <root>/CRCHistoPhenotypes_2016_04_28/Classification/.\n"
    "(The zip's Detection/ folder has no epithelial annotations.) Nothing is downloaded automatically."
)

_IMG_DIR = re.compile(r"^img(\d+)$")


def _resolve(root: Path) -> Path | None:
    """The folder holding the ``imgN`` folders under ``root``, or None."""
    for sub in SUBDIRS:
        cand = root / sub if sub else root
        if cand.is_dir() and any(_IMG_DIR.match(p.name) and p.is_dir() for p in cand.iterdir()):
            return cand
    return None


def find_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder of ``imgN`` folders under ``D`` or ``D/{colon_cancer,CRCHistoPhenotypes}`` (any accepted layout).

    ``D`` is ``data_dir`` then ``$ATS_DATA_DIR``. Raises ``FileNotFoundError``
    listing the places tried and the expected layout.
    """
    found, tried = search_data_dirs(data_dir, ROOT_NAMES, _resolve)
    if found is not None:
        return found
    where = format_tried(tried)
    raise FileNotFoundError(f"colon cancer (CRCHistoPhenotypes) data not found. Looked in:\n{where}\n{LAYOUT}")


def read_label(mat_path: str | os.PathLike) -> int:
    """1 if the ``detection`` array of an ``imgN_epithelial.mat`` has rows, else 0."""
    from scipy.io import loadmat  # deferred: only this task needs scipy.io

    mat_path = Path(mat_path)
    if not mat_path.is_file():
        hint = ""
        if (mat_path.parent / mat_path.name.replace("_epithelial", "_detection")).is_file():
            hint = " (this looks like the zip's Detection folder; use its Classification folder)"
        raise FileNotFoundError(f"annotation file not found: {mat_path}{hint}\n{LAYOUT}")
    try:
        mat = loadmat(str(mat_path))
    except Exception as e:  # scipy raises several types for corrupt files
        raise ValueError(f"cannot read MATLAB file {mat_path}: {e}") from e
    if "detection" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{mat_path} has no 'detection' variable (found {keys})")
    det = np.asarray(mat["detection"])
    if det.ndim != 2:
        raise ValueError(f"{mat_path}: 'detection' must be a (k, 2) array of nucleus centres, "
                         f"got shape {det.shape}")
    return int(det.shape[0] > 0)


def scan_images(root: str | os.PathLike, n_images: int | None = N_IMAGES) -> tuple[list[int], list[Path], list[Path]]:
    """Image numbers ``N`` (sorted), their ``.bmp`` and ``_epithelial.mat`` paths.

    ``root`` may be any accepted layout. With ``n_images`` set,
    ``img1..img{n_images}`` must all be present (others are ignored); with
    None, the ``imgN`` folders found must be numbered 1..max without gaps. Missing folders or files
    raise ``FileNotFoundError`` naming them.
    """
    given = Path(root).expanduser()
    folder = _resolve(given)
    if folder is None:
        raise FileNotFoundError(f"no imgN folders found in {given}\n{LAYOUT}")
    numbers = sorted(int(m.group(1)) for p in folder.iterdir() if p.is_dir() and (m := _IMG_DIR.match(p.name)))
    expected = range(1, (n_images if n_images is not None else max(numbers)) + 1)
    absent = sorted(set(expected) - set(numbers))
    if absent:
        names = ", ".join(f"img{n}" for n in absent[:10]) + (" ..." if len(absent) > 10 else "")
        raise FileNotFoundError(f"{len(absent)} image folder(s) missing from {folder}: {names}\n{LAYOUT}")
    numbers = list(expected)
    bmps = [folder / f"img{n}" / f"img{n}.bmp" for n in numbers]
    mats = [folder / f"img{n}" / f"img{n}_epithelial.mat" for n in numbers]
    for p in bmps:
        if not p.is_file():
            raise FileNotFoundError(f"image file not found: {p}\n{LAYOUT}")
    return numbers, bmps, mats


def k_fold_split(n_items: int, k: int = 5, fold: int = 0, seed: int = 0,
                 labels: Sequence[int] | np.ndarray | None = None) -> tuple[list[int], list[int]]:
    """Train and test indices (sorted) of fold ``fold`` of a ``k``-fold split of ``range(n_items)``.

    Deterministic for a ``seed``; the ``k`` test sets are disjoint and cover
    every index, their sizes differ by at most 1. With ``labels`` the split is
    stratified: each class is shuffled on its own and dealt round-robin over
    the folds (classes one after the other, continuing the round), so every
    class has ``floor`` or ``ceil(n_c / k)`` members in each fold and the fold
    sizes still differ by at most 1. Without labels: a plain shuffled split.
    """
    if isinstance(n_items, bool) or not isinstance(n_items, (int, np.integer)) or n_items < 1:
        raise ValueError(f"n_items must be a positive integer, got {n_items!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 2 <= k <= n_items:
        raise ValueError(f"k must be an integer in 2..n_items={n_items}, got {k!r}")
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < k:
        raise ValueError(f"fold must be an integer in 0..{k - 1}, got {fold!r}")
    rng = np.random.default_rng(seed)
    if labels is None:
        order = rng.permutation(n_items)
    else:
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] != n_items:
            raise ValueError(f"labels has {labels.shape[0]} entries, expected n_items={n_items}")
        order = np.concatenate([rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)])
    fold_of = np.empty(n_items, dtype=np.int64)
    fold_of[order] = np.arange(n_items) % k
    test = np.flatnonzero(fold_of == fold)
    train = np.flatnonzero(fold_of != fold)
    return train.tolist(), test.tolist()


def default_augmentations() -> list[Augmentation]:
    """Random flip/quarter turn, then colour jitter with the port's strengths (0.1 each)."""
    return [RandomDihedral(), ColorJitter(0.1, 0.1, 0.1, 0.1)]


class ColonCancer(ImageFileDataset):
    """One side of a fold of the colon-cancer task, images read lazily (see docs/tasks/colon_cancer.md).

    Items, :meth:`set_epoch`, :meth:`read_image` and :attr:`class_counts` come
    from :class:`~ats.data.image_dataset.ImageFileDataset`; this class finds,
    labels and splits the images.

    Args:
        root: a folder in any accepted layout (see :data:`LAYOUT`).
        split: ``"train"``, ``"test"`` or ``"all"``.
        fold, k, split_seed, stratify: the :func:`k_fold_split` used (stratified by label by default).
        augment: apply ``augmentations`` to ``x_high``; default True for train only.
        augmentations: the pipeline, default :func:`default_augmentations`.
        seed: seed of the per-item augmentation generators.
        scale: the low view is ``scaled_size(image_size, scale)`` (0.2 -> 100x100).
        resize_coordinates: ``"half_pixel"`` (default, the port) or ``"asymmetric"``.
        cache: keep decoded ``uint8`` images in memory (0.75 MB each).
        image_size: expected ``(H, W)``; n_images: expected number of images
            (None: whatever ``img1..imgM`` exist). Only tests should change them.

    Attributes:
        numbers: the image numbers ``N`` of this split's items, in dataset order.
        targets: ``int64 (n,)``; paths / mat_paths: their files.
        all_targets: labels of all images of the data set (by number order).
    """

    num_classes = 2  #: 0: no epithelial nucleus, 1: at least one

    def __init__(self, root: str | os.PathLike, split: str = "train", *, fold: int = 0, k: int = 5,
                 split_seed: int = 0, stratify: bool = True, augment: bool | None = None,
                 augmentations: Sequence[Augmentation] | None = None, seed: int = 0, scale: float = 0.2,
                 resize_coordinates: str = "half_pixel", cache: bool = False,
                 image_size: tuple[int, int] = IMAGE_SIZE, n_images: int | None = N_IMAGES) -> None:
        if split not in ("train", "test", "all"):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
        self.split, self.fold, self.k = split, int(fold), int(k)
        super().__init__(split=split, image_size=image_size, scale=scale,
                         resize_coordinates=resize_coordinates, augment=augment,
                         augmentations=augmentations, default_augmentations=default_augmentations,
                         seed=seed, cache=cache)

        numbers, bmps, mats = scan_images(root, n_images)
        self.root = bmps[0].parent.parent
        self.all_targets = np.array([read_label(m) for m in mats], dtype=np.int64)
        self._check_sizes(bmps)

        if split == "all":
            idx = list(range(len(numbers)))
        else:
            train, test = k_fold_split(len(numbers), k, fold, split_seed,
                                       self.all_targets if stratify else None)
            idx = train if split == "train" else test
        self.numbers = [numbers[j] for j in idx]
        self.paths = [bmps[j] for j in idx]
        self.mat_paths = [mats[j] for j in idx]
        self.targets = self.all_targets[idx]

    def __repr__(self) -> str:
        return (f"ColonCancer({self.split}, fold={self.fold}/{self.k}, n={len(self)}, "
                f"classes={self.class_counts.tolist()}, augment={self.augment}, seed={self.seed}, "
                f"epoch={self.epoch})")


def make_datasets(data_dir: str | os.PathLike | None = None, *, fold: int = 0, k: int = 5,
                  split_seed: int = 0, seed: int = 0, augment: bool = True,
                  **kwargs) -> tuple[ColonCancer, ColonCancer]:
    """The (train, test) pair of fold ``fold``; ``data_dir`` is resolved by :func:`find_root`.

    ``augment`` applies to the train side only. Other keyword arguments go to both.
    """
    root = find_root(data_dir)
    common = dict(fold=fold, k=k, split_seed=split_seed, seed=seed, **kwargs)
    return (ColonCancer(root, "train", augment=augment, **common),
            ColonCancer(root, "test", augment=False, **common))
