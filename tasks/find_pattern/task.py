"""The ``find_pattern`` task plugin: a synthetic task that trains in seconds."""

from __future__ import annotations

import dataclasses

from torch.utils.data import Dataset

from ats.config import RunConfig, setting
from ats.registry import task
from ats.task import Task
from tasks.find_pattern.data import FindPatternDataset


@dataclasses.dataclass(frozen=True)
class FindPatternOptions:
    """The data options of ``find_pattern`` (``--set data.NAME=VALUE``)."""

    n_train: int = setting(2000, ge=1, doc="training images")
    n_test: int = setting(500, ge=1, doc="test images")
    size: int = setting(128, ge=1, doc="image side in pixels")
    cell: int = setting(8, ge=8, doc="pixels per attention cell (x_low = size / cell)")
    noise: float = setting(0.3, ge=0, le=1, doc="amplitude of the background noise")
    seed: int = setting(0, ge=0)


@task.register("find_pattern")
class FindPattern(Task):
    """Which of four textures is hidden in a noisy 128x128 image? Synthetic,
    no files needed; trains to ~100% in a few CPU seconds."""

    name = "find_pattern"
    num_classes = 4
    in_channels = 1
    defaults = {
        "attention": "small_cnn",
        "feature": "small_cnn",
        "n_patches": 3,
        "patch_size": 16,
        "batch_size": 50,
        "epochs": 8,
        "lr": 3e-3,
        "entropy": 1e-4,
        "smoothing": 1e-4,
        "eval_seeds": 3,
    }
    options = FindPatternOptions
    presets = {"smoke": {"data.n_train": 500, "data.n_test": 100, "epochs": 2}}

    def datasets(self, config: RunConfig) -> tuple[Dataset, Dataset]:
        d = dataclasses.asdict(self.options_of(config))
        n_train, n_test = d.pop("n_train"), d.pop("n_test")
        return (FindPatternDataset(n_train, train=True, **d),
                FindPatternDataset(n_test, train=False, **d))

    def input_shapes(self, config: RunConfig):
        options = self.options_of(config)
        size, cell = options.size, options.cell
        return (1, size // cell, size // cell), (1, size, size)
