"""The model plugin interface: how ``--model NAME`` becomes a :class:`Classifier`.

A model plugin is registered in :data:`ats.registry.model` and knows

* its own options (``config.method``): a dataclass whose field annotations
  type ``--set method.NAME=VALUE`` and whose defaults are the published ones
  (a task may replace some, :attr:`ats.task.Task.method_defaults`), with an
  optional ``validate()`` for what types and bounds cannot say;
* how to build the model from the task's networks and the configuration:
  :meth:`ModelPlugin.build`.

Attention sampling (``ats``), the CNN baselines (``cnn_low``, ``cnn_full``)
and the peer patch-selection methods (``dps``, ``ips``) are built-in plugins
(:mod:`ats.plugins.models`); see docs/methods.md and docs/plugins.md.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from ats.config import RunConfig, check_fields
from ats.contracts import check_instance
from ats.registry import model as model_registry

if TYPE_CHECKING:
    from ats.classifier import Classifier
    from ats.task import Task

__all__ = ["ModelPlugin", "NoMethodOptions", "get_model_plugin", "method_options_of"]


@dataclasses.dataclass(frozen=True)
class NoMethodOptions:
    """The options of a model that has none of its own."""


class ModelPlugin:
    """Base class of model plugins: subclasses set :attr:`options` and
    implement :meth:`build`. Built with no arguments (``model.build(name)``)."""

    #: the model's own options (``config.method``), a dataclass
    options: ClassVar[type] = NoMethodOptions

    def build(self, task: "Task", config: RunConfig, options: Any) -> "Classifier":
        """The model for ``task`` and ``config``; ``options`` is ``config.method``
        as a checked :attr:`options` instance."""
        raise NotImplementedError(f"{type(self).__name__} does not define build()")


def get_model_plugin(name: str) -> ModelPlugin:
    """The registered model plugin ``name``, built and checked."""
    return check_instance(model_registry.build(name), ModelPlugin, f"model {name!r}")


def method_options_of(plugin: ModelPlugin, values: dict[str, Any], model: str) -> Any:
    """``values`` (``config.method``) as ``plugin``'s checked options dataclass.

    Raises:
        ValueError: an unknown option (naming it and the known ones), or a bad value.
    """
    names = {f.name for f in dataclasses.fields(plugin.options)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown options {['method.' + n for n in unknown]} of model "
                         f"{model!r}; its options: "
                         f"{', '.join('method.' + n for n in sorted(names)) or '(none)'}")
    options = plugin.options(**values)
    check_fields(options, prefix="method.")
    validate = getattr(options, "validate", None)
    if callable(validate):
        validate()
    return options
