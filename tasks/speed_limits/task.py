"""The ``speed_limits`` task plugin: Swedish Traffic Signs speed limits with
the paper's settings (ATS_SPEC 3.2)."""

from __future__ import annotations

import warnings

import torch
from torch.utils.data import Dataset

from ats.registry import task
from ats.task import Task
from ats.train.config import RunConfig
from tasks.speed_limits.data import CLASSES, EXPECTED_COUNTS, make_datasets


@task.register("speed_limits")
class SpeedLimitsTask(Task):
    """Swedish Traffic Signs: is there a 50, 70 or 80 speed-limit sign (or
    none) in a 960x1280 street scene? Attention on a 288x384 view, 5 patches
    of 100x100."""

    name = "speed_limits"
    num_classes = len(CLASSES)
    in_channels = 3
    defaults = {
        "attention": "speed_limits",
        "feature": "preact_resnet",
        "n_patches": 5,
        "patch_size": 100,
        "receptive_field": 9,
        "batch_size": 32,
        "epochs": 500,
        "lr": 1e-3,
        "clip_norm": 1.0,
        "lr_decay_at": (250,),
        "lr_decay": 0.1,
        "entropy": 1e-4,
        "smoothing": 1e-4,
        "class_weights": False,  # the original most likely trained unweighted (ATS_SPEC 3.2)
    }
    data_defaults = {"augment": True, "scale": 0.3, "bgr": False,
                     "resize_coordinates": "asymmetric", "cache": False, "seed": 0}
    presets = {"paper": {}}

    def datasets(self, config: RunConfig) -> tuple[Dataset, Dataset]:
        train, test = make_datasets(config.data_dir, **config.data)
        counts = {"train": len(train), "test": len(test)}
        if counts != EXPECTED_COUNTS:
            # Not an error: a subset or another annotation release is legitimate.
            warnings.warn(
                f"speed_limits: {counts['train']} train / {counts['test']} test images after "
                f"filtering, not the paper's {EXPECTED_COUNTS['train']} / "
                f"{EXPECTED_COUNTS['test']}; results are not comparable with the paper's",
                UserWarning, stacklevel=2,
            )
        return train, test

    def input_shapes(self, config: RunConfig):
        scale = config.data["scale"]
        return (3, int(960 * scale), int(1280 * scale)), (3, 960, 1280)

    def class_weights(self, train: Dataset) -> torch.Tensor:
        return torch.as_tensor(train.class_weights(), dtype=torch.float32)
