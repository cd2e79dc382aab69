"""The Task plugin interface: data, default networks and hyper-parameters.

A task is registered in :data:`ats.registry.task` and knows

* its data: ``datasets(config) -> (train, test)``, each item a dict with
  ``x_low`` (C, *low) float32, ``x_high`` (C, *high) and ``y`` (int);
* its defaults (the paper's settings, docs/tasks/) as :class:`RunConfig`
  values, its own options (``config.data``) as a dataclass, and named presets;
* its models: plugins of :data:`ats.registry.model` (:mod:`ats.models`):
  ``"ats"`` (attention sampling), the peer patch-selection methods ``"dps"``
  and ``"ips"`` (docs/methods.md) and the CNN baselines ``"cnn_low"`` and
  ``"cnn_full"``;
* its objective (:mod:`ats.objective`): single-label classification unless
  the task says otherwise.

Subclasses override :meth:`datasets` and usually :meth:`input_shapes`; the
rest has defaults built from the registries. See docs/plugins.md.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from ats.classifier import Classifier
from ats.config import (
    RunConfig,
    apply_overrides,
    check_fields,
    parse_assignment,
    resumed_config,
)
from ats.contracts import (
    check_attention_network,
    check_feature_network,
    check_instance,
)
from ats.core.sampling import Sampler
from ats.models import NoMethodOptions, get_model_plugin, method_options_of
from ats.objective import Objective, SingleLabel
from ats.registry import attention as attention_registry
from ats.registry import feature as feature_registry
from ats.registry import model as model_registry
from ats.registry import sampler as sampler_registry
from ats.registry import task as task_registry

__all__ = ["NoOptions", "Task", "configure", "configure_resume", "get_task"]


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The options of a task that has none."""


class Task:
    """Base class of task plugins (see the module docstring)."""

    name: ClassVar[str] = ""
    num_classes: ClassVar[int] = 2
    in_channels: ClassVar[int] = 1
    #: RunConfig values of the paper's setting
    defaults: ClassVar[dict[str, Any]] = {}
    #: the task's own options (``config.data``): a dataclass whose field
    #: annotations type ``--set data.NAME=VALUE`` and whose defaults are the
    #: task's; an optional ``validate()`` method checks what types cannot
    options: ClassVar[type] = NoOptions
    #: preset name -> overrides of RunConfig fields or data options
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: the model plugins this task can train (``--model``)
    models: ClassVar[tuple[str, ...]] = ("ats", "dps", "ips", "cnn_low", "cnn_full")
    #: model name -> this task's defaults of that model's options (``method.*``),
    #: where the published settings differ from the plugin's own
    method_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    #: for k-fold tasks: the data option holding the fold index (the fold
    #: count is the data option ``k``); ``ats-run --cross-validate`` uses them
    folds_key: ClassVar[str | None] = None
    #: data options that change only the training data, never the test set
    #: (``ats-compare`` compares runs that differ in them)
    training_only_options: ClassVar[frozenset[str]] = frozenset()

    # -- configuration ---------------------------------------------------------
    def config(self, preset: str | None = None, /, **overrides: Any) -> RunConfig:
        """The task's defaults, then ``preset``, then ``overrides`` (typed values)."""
        base = RunConfig(task=self.name, data=dataclasses.asdict(self.options()))
        config = self.override(base, self.defaults)
        if preset is not None:
            if preset not in self.presets:
                raise ValueError(
                    f"unknown preset {preset!r} for task {self.name!r}; "
                    f"presets: {', '.join(sorted(self.presets)) or '(none)'}"
                )
            config = self.override(config, self.presets[preset])
            config.preset = preset
        return self.override(config, overrides)

    def override(self, config: RunConfig, assignments: Mapping[str, Any], *,
                 parse: bool = False) -> RunConfig:
        """``config`` with ``assignments`` applied, typed by RunConfig's and this
        task's options' annotations (``parse``: the values are command-line text)."""
        return apply_overrides(config, assignments, parse=parse, options=self.options,
                               method_options=self.method_options)

    def method_options(self, model: str) -> tuple[type, dict[str, Any]]:
        """The options dataclass of ``model`` and this task's defaults of it
        (an unknown model has none here: :meth:`check_config` says it is unknown)."""
        if model not in self.models or model not in model_registry:
            return NoMethodOptions, {}
        cls = get_model_plugin(model).options
        defaults = {**dataclasses.asdict(cls()), **self.method_defaults.get(model, {})}
        return cls, defaults

    def method_options_of(self, config: RunConfig) -> Any:
        """``config.method`` as the model's checked options dataclass.

        Raises:
            ValueError: an unknown or invalid option, naming it.
        """
        return method_options_of(get_model_plugin(config.model), config.method, config.model)

    def options_of(self, config: RunConfig) -> Any:
        """``config.data`` as this task's checked options dataclass.

        Raises:
            ValueError: an unknown, missing or invalid option.
        """
        names = {f.name for f in dataclasses.fields(self.options)}
        unknown = sorted(set(config.data) - names)
        if unknown:
            raise ValueError(f"unknown task data options {unknown} for task {self.name!r}; "
                             f"options: {', '.join(sorted(names)) or '(none)'}")
        options = self.options(**config.data)
        check_fields(options, prefix="data.")
        validate = getattr(options, "validate", None)
        if callable(validate):
            validate()
        return options

    def check_config(self, config: RunConfig) -> None:
        """Everything about ``config`` that can be checked without data or a
        model; raises ``ValueError`` naming the setting."""
        if config.task != self.name:
            raise ValueError(f"the configuration is for task {config.task!r}, not {self.name!r}")
        if config.model not in self.models:
            raise ValueError(
                f"unknown model {config.model!r} for task {self.name!r}; "
                f"models: {', '.join(self.models)}"
            )
        self.options_of(config)
        self.method_options_of(config)

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
            "y": self.objective(config).random_targets(batch_size, self.num_classes,
                                                       generator=generator),
        }

    def objective(self, config: RunConfig) -> Objective:
        """The loss and error of this task's labels (single-label by default)."""
        return SingleLabel()

    def class_weights(self, train: Dataset) -> torch.Tensor | None:
        """Per-class loss weights when ``config.class_weights`` is set."""
        return None

    # -- models ------------------------------------------------------------------
    def attention_network(self, config: RunConfig) -> nn.Module:
        net = attention_registry.build(config.attention, in_channels=self.in_channels)
        return check_attention_network(net, f"attention network {config.attention!r}")

    def feature_network(self, config: RunConfig) -> nn.Module:
        net = feature_registry.build(config.feature, in_channels=self.in_channels)
        return check_feature_network(net, f"feature network {config.feature!r}")

    def baseline_network(self, config: RunConfig, view: str) -> nn.Module:
        """The CNN of a baseline; by default the feature network applied to
        the whole view (it ends in global pooling, so any size works)."""
        return self.feature_network(config)

    def sampler(self, config: RunConfig) -> Sampler:
        kwargs = {"grad": config.wor_grad} if config.sampler == "without_replacement" else {}
        built = sampler_registry.build(config.sampler, **kwargs)
        return check_instance(built, Sampler, f"sampler {config.sampler!r}")

    def build_model(self, config: RunConfig) -> Classifier:
        """The model named by ``config.model``, built by its plugin."""
        self.check_config(config)
        built = get_model_plugin(config.model).build(self, config, self.method_options_of(config))
        return check_instance(built, Classifier, f"model {config.model!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def get_task(name: str) -> Task:
    """The registered task ``name``, built and checked to be a :class:`Task`."""
    return check_instance(task_registry.build(name), Task, f"task {name!r}")


def configure(task: str | Task, *, preset: str | None = None,
              options: Mapping[str, Any] | None = None,
              sets: Sequence[str] = ()) -> tuple[Task, RunConfig]:
    """Resolve a run's configuration: task defaults < preset < typed ``options``
    (e.g. from command-line flags; ``None`` values are skipped) < ``sets``
    (``"key=value"`` texts, parsed by type); then checked as a whole.

    Raises:
        ValueError: an unknown task, preset, setting or a bad value.
    """
    task = get_task(task) if isinstance(task, str) else task
    config = task.config(preset)
    config = task.override(config, {k: v for k, v in (options or {}).items() if v is not None})
    config = task.override(config, dict(parse_assignment(s) for s in sets), parse=True)
    task.check_config(config)
    return task, config


def configure_resume(task: str | Task | None, output: str | Path, *, preset: str | None = None,
                     options: Mapping[str, Any] | None = None,
                     sets: Sequence[str] = ()) -> tuple[Task, RunConfig]:
    """The configuration to continue the run in ``output``: the one saved in
    its ``config.json`` with ``output`` set to the directory given (wherever
    the run was first written) and the changes that may be made on resume
    (:data:`ats.config.RESUMABLE`); ``preset``, ``options`` and ``sets`` as
    in :func:`configure`. ``task`` None: the task the run was made with.

    Raises:
        FileNotFoundError: no ``config.json`` in ``output``.
        ValueError: a run of another task, or a change that is not allowed.
    """
    path = Path(output) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no run to resume in {output} (no config.json)")
    try:
        saved = RunConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    task = saved.task if task is None else task
    task = get_task(task) if isinstance(task, str) else task
    if saved.task != task.name:
        raise ValueError(f"{output} holds a {saved.task!r} run, not {task.name!r}")
    given = task.override(saved, {k: v for k, v in (options or {}).items() if v is not None})
    given = task.override(given, dict(parse_assignment(s) for s in sets), parse=True)
    if preset is not None:
        given.preset = preset
    given.output = str(output)
    before = saved.to_dict()
    changes = {k: v for k, v in given.to_dict().items() if before[k] != v}
    config = resumed_config(saved, changes)
    task.check_config(config)
    return task, config
