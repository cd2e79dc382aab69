"""The ``find_pattern`` task plugin: a synthetic task that trains in seconds."""

from __future__ import annotations

from torch.utils.data import Dataset

from ats.registry import task
from ats.task import Task
from ats.train.config import RunConfig
from tasks.find_pattern.data import FindPatternDataset


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
    data_defaults = {"n_train": 2000, "n_test": 500, "size": 128, "cell": 8, "noise": 0.3,
                     "seed": 0}
    presets = {"smoke": {"data.n_train": 500, "data.n_test": 100, "epochs": 2}}

    def datasets(self, config: RunConfig) -> tuple[Dataset, Dataset]:
        d = dict(config.data)
        n_train, n_test = d.pop("n_train"), d.pop("n_test")
        return (FindPatternDataset(n_train, train=True, **d),
                FindPatternDataset(n_test, train=False, **d))

    def input_shapes(self, config: RunConfig):
        size, cell = config.data["size"], config.data["cell"]
        return (1, size // cell, size // cell), (1, size, size)
