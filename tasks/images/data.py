"""The data of the ``images`` task: checked sources, low views, splits
(docs/tasks/images.md).

Every file is opened and checked before training (:func:`check_files`): a
missing, unreadable, truncated or wrong-channel file, or one whose dtype
differs from the others', stops the run with the list of bad files and why.
Items are ``{"x_low", "x_high", "y", "index"}`` where ``x_low`` is the low
view padded to the batch shape and ``x_high`` a :class:`~ats.sources.Framed`
source: the pixels stay in the file until the model reads its patches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ats.sources import Framed, LowViewCache, Source, fit_size, low_view, open_source

__all__ = ["LowPolicy", "ImageSourceDataset", "check_files", "fold_split"]

#: at most this many bad files are listed in the error
SHOWN_PROBLEMS = 20


def check_files(paths: Sequence[Path], channels: int) -> list[Source]:
    """Open and verify every file; all must have ``channels`` channels and one dtype.

    Raises:
        ValueError: listing every bad file and why (nothing is read further).
    """
    sources: list[Source | None] = []
    problems: list[str] = []
    for path in paths:
        try:
            s = open_source(path)
            if s.channels != channels:
                raise ValueError(f"has {s.channels} channel(s), expected {channels} "
                                 "(data.channels)")
            s.verify()
        except FileNotFoundError:
            problems.append(f"{path}: missing")
            s = None
        except (ValueError, OSError, ImportError) as exc:
            problems.append(f"{path}: {' '.join(str(exc).split())}")
            s = None
        sources.append(s)
    opened = [s for s in sources if s is not None]
    if opened:
        common = Counter(s.dtype for s in opened).most_common(1)[0][0]
        problems += [f"{s.path}: dtype {s.dtype}, the other files are {common}"
                     for s in opened if s.dtype != common]
    if problems:
        shown = "\n".join(f"  - {p}" for p in problems[:SHOWN_PROBLEMS])
        more = f"\n  ... and {len(problems) - SHOWN_PROBLEMS} more" \
            if len(problems) > SHOWN_PROBLEMS else ""
        raise ValueError(f"{len(problems)} of {len(paths)} image file(s) cannot be used:\n"
                         f"{shown}{more}")
    return opened


@dataclass(frozen=True)
class LowPolicy:
    """How big each item's low view is, and the batch shape it is padded to.

    Exactly one way: ``box`` (fit inside with the aspect kept), ``scale``
    (``int(H s), int(W s)``) or ``level`` (that pyramid level as it is).
    """

    box: tuple[int, int] | None = None
    scale: float | None = None
    level: int | None = None

    def size_of(self, source: Source) -> tuple[int, int]:
        H, W = source.shape[1:]
        if self.level is not None:
            if self.level >= source.levels:
                raise ValueError(f"{source.describe()} has {source.levels} pyramid level(s); "
                                 f"data.level={self.level} does not exist in it")
            return source.level_shapes[self.level]
        if self.scale is not None:
            return max(1, int(H * self.scale)), max(1, int(W * self.scale))
        return fit_size((H, W), self.box)  # type: ignore[arg-type]

    def batch_shape(self, sources: Sequence[Source]) -> tuple[int, int]:
        """The padded shape: the box, or the largest low view of ``sources``."""
        if self.box is not None and self.scale is None and self.level is None:
            return self.box
        sizes = np.array([self.size_of(s) for s in sources])
        return int(sizes[:, 0].max()), int(sizes[:, 1].max())


class ImageSourceDataset(Dataset):
    """Image sources served as padded low views and framed sources.

    Args:
        sources: the checked images.
        targets: int64 (n,) class numbers.
        policy: the low-view sizes; ``low_shape`` the padded ``(h, w)``.
        cache: the on-disk low-view cache (None: computed every time).
    """

    def __init__(self, sources: Sequence[Source], targets: np.ndarray, *, policy: LowPolicy,
                 low_shape: tuple[int, int], cache: LowViewCache | None) -> None:
        if len(sources) != len(targets):
            raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
        self.sources = list(sources)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.policy, self.low_shape, self.cache = policy, tuple(low_shape), cache

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> dict:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a data set of {n} images")
        i = int(i) % n
        source = self.sources[i]
        size = self.policy.size_of(source)
        view = low_view(source, size, cache=self.cache)
        x_low = torch.zeros((source.channels, *self.low_shape), dtype=torch.float32)
        x_low[:, :size[0], :size[1]] = torch.from_numpy(view)
        return {"x_low": x_low, "x_high": Framed(source, size), "y": int(self.targets[i]),
                "index": i}


def fold_split(targets: np.ndarray, k: int, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified k-fold: each class's images shuffled by ``seed`` and dealt
    round-robin into k folds; returns (train, test) indices (test = ``fold``)."""
    rng = np.random.default_rng(seed)
    folds = np.empty(len(targets), dtype=np.int64)
    dealt = 0  # continue dealing where the last class stopped: folds stay balanced
    for c in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == c))
        folds[members] = (dealt + np.arange(len(members))) % k
        dealt += len(members)
    return np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
