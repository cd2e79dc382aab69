"""The ``colon_cancer`` task plugin: epithelial nuclei in H&E histology
(CRCHistoPhenotypes), with a real held-out protocol (docs/tasks/colon_cancer.md)."""

from __future__ import annotations

import dataclasses

from torch import nn
from torch.utils.data import Dataset

from ats.config import RunConfig, setting
from ats.registry import feature, task
from ats.task import Task
from tasks.colon_cancer.data import make_datasets


@dataclasses.dataclass(frozen=True)
class ColonCancerOptions:
    """The data options of ``colon_cancer`` (``--set data.NAME=VALUE``)."""

    fold: int = setting(0, ge=0, doc="the held-out fold, 0 <= fold < k")
    k: int = setting(5, ge=2, doc="number of folds")
    split_seed: int = setting(0, ge=0, doc="seed of the stratified fold split")
    augment: bool = setting(True, doc="random flips, quarter turns and colour jitter (train)")
    scale: float = setting(0.2, gt=0, le=1, doc="x_low = resize of x_high by this")
    seed: int = setting(0, ge=0, doc="augmentation seed")
    n_images: int = setting(100, ge=1, doc="use the first n images (the data set has 100)")

    def validate(self) -> None:
        if self.fold >= self.k:
            raise ValueError(f"data.fold must be < data.k={self.k}, got {self.fold}")


@task.register("colon_cancer")
class ColonCancerTask(Task):
    """Colon-cancer histology: does a 500x500 H&E image contain epithelial
    nuclei? Attention on a 100x100 view, 10 patches of 27x27; evaluated by
    k-fold cross-validation (``data.fold`` of ``data.k``)."""

    name = "colon_cancer"
    num_classes = 2
    in_channels = 3
    defaults = {
        "attention": "colon_cancer",
        "feature": "lenet",
        "n_patches": 10,
        "patch_size": 27,
        "receptive_field": 0,
        "batch_size": 8,
        "epochs": 500,
        "lr": 1e-3,
        "clip_norm": 1.0,
        "entropy": 0.01,
        "smoothing": 0.0,  # the port's value; --set smoothing=1e-4 bounds the 1/a terms
    }
    options = ColonCancerOptions
    presets = {"paper": {}}
    folds_key = "fold"

    def datasets(self, config: RunConfig) -> tuple[Dataset, Dataset]:
        return make_datasets(config.data_dir, **dataclasses.asdict(self.options_of(config)))

    def input_shapes(self, config: RunConfig):
        side = int(500 * self.options_of(config).scale)
        return (3, side, side), (3, 500, 500)

    def feature_network(self, config: RunConfig) -> nn.Module:
        patch = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
        return feature.build(config.feature, in_channels=3, patch_size=patch)

    def baseline_network(self, config: RunConfig, view: str) -> nn.Module:
        # The LeNet's dense layer is sized for 27x27 patches; on whole views
        # the same convolutions end in global max pooling instead.
        return feature.build(config.feature, in_channels=3, global_pool=True)
