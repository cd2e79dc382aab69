"""The ``images`` task plugin: attention sampling on your own image files
(docs/tasks/images.md).

``ats-run --task images --data-dir DIR``: ``DIR/labels.csv`` (or class
sub-folders) names the images and their labels; any format an image source
reads (docs/sources.md), any size, several sizes in one data set. The pixels
stay in the files: items carry sources, and the model reads only its patches.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from torch import nn
from torch.utils.data import Dataset

from ats.classifier import Classifier
from ats.config import RunConfig, setting
from ats.contracts import check_attention_network, check_feature_network
from ats.registry import attention as attention_registry
from ats.registry import feature as feature_registry
from ats.registry import task
from ats.sources import LowViewCache, Source
from ats.task import Task
from tasks.images.data import ImageSourceDataset, LowPolicy, check_files, fold_split
from tasks.images.labels import LabelTable, read_labels

__all__ = ["ImagesOptions", "ImagesTask", "DEFAULT_NETWORKS"]

#: (attention, feature) for ``auto``: the Megapixel MNIST networks for grey
#: images, the colon-cancer attention and the speed-limits ResNet for colour
DEFAULT_NETWORKS = {1: ("mnist", "mnist"), 3: ("colon_cancer", "preact_resnet")}


@dataclasses.dataclass(frozen=True)
class ImagesOptions:
    """The data options of ``images`` (``--set data.NAME=VALUE``)."""

    low_size: int | tuple[int, ...] = setting(
        256, ge=1, doc="x_low's (h, w): each image fit inside with its aspect kept, then padded")
    scale: float | None = setting(
        None, gt=0, le=1, doc="instead of low_size: x_low = int(H scale) x int(W scale)")
    level: int | None = setting(
        None, ge=0, doc="instead of low_size: this pyramid level (0: full size) is x_low")
    channels: int = setting(3, ge=1, doc="channels of every image (checked); 1 for grey")
    split: Literal["auto", "column", "folds"] = setting(
        "auto", doc="train/test: the split column (auto: when there is one), else k folds")
    k: int = setting(5, ge=2, doc="number of folds")
    fold: int = setting(0, ge=0, doc="the held-out fold, 0 <= fold < k")
    split_seed: int = setting(0, ge=0, doc="seed of the stratified fold split")
    low_cache: bool = setting(True, doc="keep low views on disk (keyed by file identity)")
    cache_dir: str | None = setting(None, doc="the low-view cache folder (default: the user cache)")

    def validate(self) -> None:
        if self.scale is not None and self.level is not None:
            raise ValueError("set data.scale or data.level, not both")
        if isinstance(self.low_size, tuple) and len(self.low_size) not in (1, 2):
            raise ValueError(f"data.low_size must be one or two ints, got {self.low_size}")
        if self.fold >= self.k:
            raise ValueError(f"data.fold must be < data.k={self.k}, got {self.fold}")

    @property
    def policy(self) -> LowPolicy:
        box = (self.low_size, self.low_size) if isinstance(self.low_size, int) else \
            (self.low_size[0], self.low_size[-1])
        return LowPolicy(box=box, scale=self.scale, level=self.level)


@task.register("images")
class ImagesTask(Task):
    """Your own images: DIR/labels.csv (path,label[,split]) or class folders;
    any size and format (TIFF pyramids, zarr, whole slides, PNG/JPEG), read lazily."""

    name = "images"
    num_classes = 2  # the labels' count, once they are read (build_model)
    in_channels = 3
    models = ("ats", "dps", "ips", "cnn_low")
    defaults = {
        "attention": "auto",
        "feature": "auto",
        "n_patches": 10,
        "patch_size": 128,
        "receptive_field": 0,
        "batch_size": 8,
        "epochs": 20,
        "lr": 1e-3,
        "clip_norm": 1.0,
        "entropy": 1e-4,
        "smoothing": 1e-4,
        "sampler": "without_replacement",
    }
    options = ImagesOptions
    presets = {"smoke": {"epochs": 2, "eval_seeds": 1, "pictures": 2}}
    folds_key = "fold"

    def __init__(self) -> None:
        self._checked: dict[tuple, tuple[LabelTable, list[Source]]] = {}

    # -- data --------------------------------------------------------------------
    def labels(self, config: RunConfig) -> LabelTable:
        """The label table of ``config.data_dir`` (only the table is read)."""
        if not config.data_dir:
            raise ValueError("the images task needs --data-dir DIR, a folder with labels.csv "
                             "(path,label[,split]) or class sub-folders (docs/tasks/images.md)")
        return read_labels(config.data_dir)

    def checked(self, config: RunConfig) -> tuple[LabelTable, list[Source]]:
        """The table and every file opened and checked (once per folder and
        channel count in this task object)."""
        options = self.options_of(config)
        key = (config.data_dir, options.channels)
        if key not in self._checked:
            table = self.labels(config)
            self._checked[key] = (table, check_files(table.paths, options.channels))
        return self._checked[key]

    def datasets(self, config: RunConfig) -> tuple[Dataset, Dataset]:
        options = self.options_of(config)
        table, sources = self.checked(config)
        train_idx, test_idx = self._split(table, options)
        policy = options.policy
        low_shape = policy.batch_shape(sources)
        cache = LowViewCache(options.cache_dir) if options.low_cache else None

        def subset(idx):
            return ImageSourceDataset([sources[i] for i in idx], table.targets[idx],
                                      policy=policy, low_shape=low_shape, cache=cache)

        return subset(train_idx), subset(test_idx)

    def _split(self, table: LabelTable, options: ImagesOptions):
        import numpy as np

        mode = options.split
        if mode == "auto":
            mode = "column" if table.splits is not None else "folds"
        if mode == "column":
            if table.splits is None:
                raise ValueError(f"data.split=column but {table.where} has no split column")
            splits = np.array(table.splits)
            train, test = np.flatnonzero(splits == "train"), np.flatnonzero(splits == "test")
        else:
            train, test = fold_split(table.targets, options.k, options.fold, options.split_seed)
        if len(train) == 0 or len(test) == 0:
            raise ValueError(f"{table.where}: the split leaves {len(train)} training and "
                             f"{len(test)} test images; both need at least one")
        return train, test

    def input_shapes(self, config: RunConfig):
        """``(C, *low)`` the padded low view and ``(C, *high)`` the smallest
        image (the strictest for the patch size); reads the files' headers."""
        options = self.options_of(config)
        _, sources = self.checked(config)
        low = options.policy.batch_shape(sources)
        high = (min(s.shape[1] for s in sources), min(s.shape[2] for s in sources))
        return (options.channels, *low), (options.channels, *high)

    # -- models ------------------------------------------------------------------
    def _network_names(self, config: RunConfig) -> tuple[str, str]:
        channels = self.options_of(config).channels
        auto = DEFAULT_NETWORKS[1 if channels == 1 else 3]
        return (auto[0] if config.attention == "auto" else config.attention,
                auto[1] if config.feature == "auto" else config.feature)

    def attention_network(self, config: RunConfig) -> nn.Module:
        name = self._network_names(config)[0]
        net = attention_registry.build(name, in_channels=self.options_of(config).channels)
        return check_attention_network(net, f"attention network {name!r}")

    def feature_network(self, config: RunConfig) -> nn.Module:
        name = self._network_names(config)[1]
        net = feature_registry.build(name, in_channels=self.options_of(config).channels)
        return check_feature_network(net, f"feature network {name!r}")

    def build_model(self, config: RunConfig) -> Classifier:
        """The model, with one output per class of the label table."""
        self.num_classes = len(self.labels(config).classes)  # type: ignore[misc]
        self.in_channels = self.options_of(config).channels  # type: ignore[misc]
        return super().build_model(config)

    def synthetic_batch(self, config: RunConfig, batch_size: int, **kwargs: Any):
        raise ValueError("the images task reads its images from files; benchmark it on them "
                         "(ats-bench train --real-data, or ats-bench step)")
