"""A base class for datasets of image files served as (low, high) view pairs.

The real-image tasks (speed limits, colon cancer) differ in how they find
their files, label them and split them, but serve their items the same way;
:class:`ImageFileDataset` holds that common part. A subclass:

1. validates its own arguments, then calls ``super().__init__(...)`` with the
   shared keyword arguments (image size, scale, resize coordinates, split,
   augmentation, seed, cache);
2. sets ``self.paths`` (one image file per item) and ``self.targets``
   (``int64 (N,)`` labels), in dataset order;
3. sets the class attribute :attr:`ImageFileDataset.num_classes`;
4. may override :meth:`ImageFileDataset._decode` to change how a file
   becomes an array (e.g. to flip RGB to BGR).

**Items** are dicts:

* ``x_high``: ``(3, H, W)``, ``(H, W) = image_size``. Its dtype depends on
  whether the dataset augments, never on the item: ``uint8`` (0..255
  standing for ``v/255``, the decoded image unchanged) without augmentation,
  ``float32`` on the [0, 1] scale (possibly leaving it, e.g. ``a*x + b``
  does not clip) with augmentation, also for items whose draws changed
  nothing, so that a batch never mixes the two scales;
* ``x_low``: ``float32 (3, h, w)``, ``(h, w) = scaled_size(image_size,
  scale)``: the bilinear resize (with ``resize_coordinates``) of the
  (augmented) ``x_high`` on the [0, 1] scale;
* ``y``: the label (int); ``index``: the item's position in the dataset (int).

Augmentations run on ``x_high`` before ``x_low`` is made from it, drawing
from ``item_rng(seed, epoch, index)``; :meth:`ImageFileDataset.set_epoch`
selects the epoch.
"""

from __future__ import annotations

import os
from typing import Callable, ClassVar, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ats.data.images import read_image_size, read_rgb_image
from ats.data.transforms import (
    COORDINATES,
    Augmentation,
    apply_augmentations,
    as_float_image,
    item_rng,
    resize_bilinear,
    scaled_size,
)

__all__ = ["ImageFileDataset"]


class ImageFileDataset(Dataset):
    """Image files read lazily (optionally cached) and served as ``x_low``/``x_high`` pairs.

    See the module docstring for the item format and what subclasses provide.

    Args:
        split: the subclass's split name; only ``"train"`` augments by default.
        image_size: expected ``(H, W)`` of every image (checked on decode).
        scale: the low view is ``scaled_size(image_size, scale)``.
        resize_coordinates: one of :data:`~ats.data.transforms.COORDINATES`.
        augment: apply ``augmentations`` to ``x_high``; None: ``split == "train"``.
        augmentations: the pipeline; None: ``default_augmentations()``.
        default_augmentations: makes the default pipeline (the task's).
        seed: seed of the per-item augmentation generators (integer >= 0).
        cache: keep decoded ``uint8 (H, W, 3)`` images in memory (one cache
            per DataLoader worker).

    Attributes:
        image_size, low_size: ``(H, W)`` of ``x_high`` and of ``x_low``.
        scale, resize_coordinates, augment, augmentations, seed, epoch, cache: as given
            (``epoch`` starts at 0).
        paths: image files, one per item (set by the subclass).
        targets: ``int64 (N,)`` labels (set by the subclass).
    """

    #: Number of classes; the labels are ``0..num_classes - 1``. Set by subclasses.
    num_classes: ClassVar[int]

    def __init__(self, *, split: str, image_size: tuple[int, int], scale: float,
                 resize_coordinates: str, augment: bool | None,
                 augmentations: Sequence[Augmentation] | None,
                 default_augmentations: Callable[[], Sequence[Augmentation]],
                 seed: int, cache: bool) -> None:
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.low_size = scaled_size(self.image_size, scale)
        self.scale = float(scale)
        if resize_coordinates not in COORDINATES:
            raise ValueError(f"resize_coordinates must be one of {COORDINATES}, got {resize_coordinates!r}")
        self.resize_coordinates = resize_coordinates
        self.augment = (split == "train") if augment is None else bool(augment)
        self.augmentations = list(default_augmentations() if augmentations is None else augmentations)
        item_rng(seed, 0, 0)  # validates the seed early
        self.seed, self.epoch = int(seed), 0
        self.cache = bool(cache)
        self._cache: dict[int, np.ndarray] = {}
        self.paths: list[os.PathLike] = []
        self.targets = np.zeros(0, dtype=np.int64)

    def _check_sizes(self, paths: Sequence[str | os.PathLike] | None = None) -> None:
        """Raise ``ValueError`` listing the files (default: :attr:`paths`) whose size is not ``image_size``.

        Reads the headers only (no decoding).
        """
        bad = []
        for p in self.paths if paths is None else paths:
            hw = read_image_size(p)
            if hw != self.image_size:
                bad.append(f"{p} is {hw[0]}x{hw[1]}")
        if bad:
            h, w = self.image_size
            raise ValueError(f"{len(bad)} image(s) of unexpected size (expected {h}x{w} HxW pixels): "
                             + "; ".join(bad[:10]) + (" ..." if len(bad) > 10 else ""))

    # ------------------------------------------------------------------ properties

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def high_shape(self) -> tuple[int, int, int]:
        """Shape of ``x_high``: ``(3, H, W)``."""
        return (3, *self.image_size)

    @property
    def low_shape(self) -> tuple[int, int, int]:
        """Shape of ``x_low``: ``(3, h, w)``, ``(h, w) = low_size``."""
        return (3, *self.low_size)

    @property
    def class_counts(self) -> np.ndarray:
        """Images per class, ``int64 (num_classes,)``."""
        return np.bincount(self.targets, minlength=self.num_classes)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (integer >= 0)."""
        item_rng(self.seed, epoch, 0)
        self.epoch = int(epoch)

    # ------------------------------------------------------------------ items

    def _index(self, i: int) -> int:
        """``i`` as a position in ``0..N-1`` (negative ``i`` counts from the end); IndexError if out of range."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} images")
        return int(i) % n

    def _decode(self, i: int) -> np.ndarray:
        """Decode the file of item ``i`` (a valid position): ``uint8 (H, W, 3)`` RGB.

        The hook of :meth:`read_image`; override to change the channel order
        or the reader. The size is checked against ``image_size``.
        """
        return read_rgb_image(self.paths[i], self.image_size)

    def read_image(self, i: int) -> np.ndarray:
        """Image ``i`` as stored: ``uint8 (H, W, 3)`` as :meth:`_decode` gives it, from the cache if kept."""
        i = self._index(i)
        img = self._cache.get(i)
        if img is None:
            img = self._decode(i)
            if self.cache:
                self._cache[i] = img
        return img

    def __getitem__(self, i: int) -> dict:
        """Item ``i``: ``{"x_low", "x_high", "y", "index"}`` (see the module docstring)."""
        i = self._index(i)
        x_high = torch.from_numpy(np.ascontiguousarray(self.read_image(i).transpose(2, 0, 1)))
        if self.augment:
            x_high = apply_augmentations(as_float_image(x_high), self.augmentations,
                                         item_rng(self.seed, self.epoch, i)).contiguous()
            x_low = resize_bilinear(x_high, self.low_size, self.resize_coordinates)
        else:
            x_low = resize_bilinear(as_float_image(x_high), self.low_size, self.resize_coordinates)
        return {"x_low": x_low.to(torch.float32), "x_high": x_high, "y": int(self.targets[i]), "index": i}
