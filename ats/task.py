"""The Task plugin interface: data, default networks and hyper-parameters.

A task is registered in :data:`ats.registry.task` and knows

* its data: ``datasets(config) -> (train, test)``, each item a dict with
  ``x_low`` (C, *low) float32, ``x_high`` (C, *high) and ``y`` (int);
* its defaults (the paper's settings, ATS_SPEC 3) as :class:`RunConfig`
  values, its own data options, and named presets;
* its models: ``"ats"`` (attention sampling) and the CNN baselines
  ``"cnn_low"`` and ``"cnn_full"``.

Subclasses override :meth:`datasets` and usually :meth:`input_shapes`; the
rest has defaults built from the registries.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from ats.classifier import ATSClassifier, CNNClassifier
from ats.core.model import AttentionSampling
from ats.registry import attention as attention_registry
from ats.registry import feature as feature_registry
from ats.registry import sampler as sampler_registry
from ats.train.config import RunConfig, apply_overrides

__all__ = ["Task"]


class Task:
    """Base class of task plugins (see the module docstring)."""

    name: ClassVar[str] = ""
    num_classes: ClassVar[int] = 2
    in_channels: ClassVar[int] = 1
    #: RunConfig values of the paper's setting
    defaults: ClassVar[dict[str, Any]] = {}
    #: the task's own options (``config.data``), with their defaults
    data_defaults: ClassVar[dict[str, Any]] = {}
    #: preset name -> overrides of RunConfig fields or data options
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    models: ClassVar[tuple[str, ...]] = ("ats", "cnn_low", "cnn_full")

    # -- configuration ---------------------------------------------------------
    def config(self, preset: str | None = None, **overrides: Any) -> RunConfig:
        """The task's defaults, then ``preset``, then ``overrides`` (typed values)."""
        base = RunConfig(task=self.name, data=copy.deepcopy(self.data_defaults))
        config = apply_overrides(base, self.defaults, parse=False)
        if preset is not None:
            if preset not in self.presets:
                raise ValueError(
                    f"unknown preset {preset!r} for task {self.name!r}; "
                    f"presets: {', '.join(sorted(self.presets)) or '(none)'}"
                )
            config = apply_overrides(config, self.presets[preset], parse=False)
            config.preset = preset
        return apply_overrides(config, overrides, parse=False)

    # -- data --------------------------------------------------------------------
    def datasets(self, config: RunConfig) -> tuple[Dataset, Dataset]:
        """(train, test) datasets for ``config``. Raise a clear error when the
        data is missing (naming what is needed and where to put it)."""
        raise NotImplementedError(f"task {self.name!r} does not define datasets()")

    def input_shapes(self, config: RunConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes (C, *low) and (C, *high) of one item, without reading data."""
        raise NotImplementedError(f"task {self.name!r} does not define input_shapes()")

    def synthetic_batch(self, config: RunConfig, batch_size: int, *,
                        generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """A random batch of the real input sizes, for benchmarks without data."""
        low, high = self.input_shapes(config)
        return {
            "x_low": torch.rand((batch_size, *low), generator=generator),
            "x_high": torch.randint(0, 256, (batch_size, *high), generator=generator,
                                    dtype=torch.uint8),
            "y": torch.randint(0, self.num_classes, (batch_size,), generator=generator),
        }

    def class_weights(self, train: Dataset) -> torch.Tensor | None:
        """Per-class loss weights when ``config.class_weights`` is set."""
        return None

    # -- models ------------------------------------------------------------------
    def attention_network(self, config: RunConfig) -> nn.Module:
        return attention_registry.build(config.attention, in_channels=self.in_channels)

    def feature_network(self, config: RunConfig) -> nn.Module:
        return feature_registry.build(config.feature, in_channels=self.in_channels)

    def baseline_network(self, config: RunConfig, view: str) -> nn.Module:
        """The CNN of a baseline; by default the feature network applied to
        the whole view (it ends in global pooling, so any size works)."""
        return self.feature_network(config)

    def build_model(self, config: RunConfig) -> nn.Module:
        """The model named by ``config.model``."""
        if config.model not in self.models:
            raise ValueError(
                f"unknown model {config.model!r} for task {self.name!r}; "
                f"models: {', '.join(self.models)}"
            )
        if config.model == "ats":
            feature = self.feature_network(config)
            sampler_kwargs = {"grad": config.wor_grad} if config.sampler == "without_replacement" else {}
            ats = AttentionSampling(
                self.attention_network(config),
                feature,
                n_patches=config.n_patches,
                patch_size=config.patch_size,
                receptive_field=config.receptive_field,
                sampler=sampler_registry.build(config.sampler, **sampler_kwargs),
                extractor=config.extractor,
                smoothing=config.smoothing,
            )
            return ATSClassifier(ats, feature_dim=_out_features(feature), num_classes=self.num_classes)
        view = "low" if config.model == "cnn_low" else "full"
        network = self.baseline_network(config, view)
        return CNNClassifier(network, feature_dim=_out_features(network),
                             num_classes=self.num_classes, view=view)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _out_features(network: nn.Module) -> int:
    size = getattr(network, "out_features", None)
    if not isinstance(size, int):
        raise ValueError(
            f"{type(network).__name__} must expose its output size as an int attribute "
            "`out_features`"
        )
    return size
