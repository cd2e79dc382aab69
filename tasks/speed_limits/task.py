"""The ``speed_limits`` task plugin: Swedish Traffic Signs speed limits with
the paper's settings (docs/tasks/speed_limits.md)."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Literal

import torch
from torch.utils.data import Dataset

from ats.config import RunConfig, setting
from ats.registry import task
from ats.task import Task
from tasks.speed_limits.data import CLASSES, EXPECTED_COUNTS, make_datasets


@dataclasses.dataclass(frozen=True)
class SpeedLimitsOptions:
    """The data options of ``speed_limits`` (``--set data.NAME=VALUE``)."""

    augment: bool = setting(True, doc="a*x+b and pan of the training images")
    scale: float = setting(0.3, gt=0, le=1, doc="x_low = bilinear resize of x_high by this")
    bgr: bool = setting(False, doc="the original's OpenCV channel order")
    resize_coordinates: Literal["asymmetric", "half_pixel"] = setting(
        "asymmetric", doc="TF1's asymmetric map (the original) or half-pixel centres")
    cache: bool = setting(False, doc="keep decoded images in memory")
    seed: int = setting(0, ge=0, doc="augmentation seed")


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
        "class_weights": False,  # the original most likely trained unweighted (docs/tasks/speed_limits.md)
    }
    options = SpeedLimitsOptions
    presets = {"paper": {}}
    # IPS's traffic-sign configuration (Bergner et al., ICLR 2023): M 10, I 32,
    # 100x100 patches without overlap, a wider transformer, no positions
    method_defaults = {"ips": {"memory": 10, "chunk": 32, "d_model": 512, "d_head": 64,
                               "d_inner": 2048, "positional": False}}

    def datasets(self, config: RunConfig) -> tuple[Dataset, Dataset]:
        train, test = make_datasets(config.data_dir,
                                    **dataclasses.asdict(self.options_of(config)))
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
        scale = self.options_of(config).scale
        return (3, int(960 * scale), int(1280 * scale)), (3, 960, 1280)

    def class_weights(self, train: Dataset) -> torch.Tensor:
        return torch.as_tensor(train.class_weights(), dtype=torch.float32)
