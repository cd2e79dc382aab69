"""What the engine expects of plugins, written down and checked.

Networks, datasets and models are duck-typed: a plugin only needs the
members below. Each contract is a :class:`typing.Protocol` (for readers and
type checkers) with a ``check_*`` function that the code building a plugin
calls, so that a plugin missing a member fails when it is built, with an
error naming the member, not deep inside a training step. Samplers, extractors
and tasks are base classes instead (:class:`ats.core.sampling.Sampler`,
:class:`ats.core.extract.Extractor`, :class:`ats.task.Task`). See
docs/plugins.md.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol, runtime_checkable

from torch import Tensor, nn

__all__ = [
    "AttentionNetwork",
    "EpochAware",
    "FeatureNetwork",
    "PluginContractError",
    "Regularized",
    "check_attention_network",
    "check_feature_network",
    "check_instance",
    "regularization_terms",
    "set_epoch",
]


class PluginContractError(TypeError):
    """A plugin lacks a member the engine relies on."""


@runtime_checkable
class AttentionNetwork(Protocol):
    """An ``nn.Module`` mapping ``x_low`` (B, C, *low) to scores (B, 1, *space)
    or (B, *space), 1 to 3 spatial dims; the softmax over all positions is
    taken by :class:`ats.AttentionSampling`."""

    def __call__(self, x_low: Tensor) -> Tensor: ...


@runtime_checkable
class FeatureNetwork(Protocol):
    """An ``nn.Module`` mapping patches (B*N, C, *patch) to features (B*N, D).

    Attributes:
        out_features: D, an int; the classifier head is sized from it. The
            feature vectors should be L2-normalised: the estimator's variance
            is smallest when every feature has the same norm
            (docs/method.md, "Estimator with replacement").
    """

    out_features: int

    def __call__(self, patches: Tensor) -> Tensor: ...


@runtime_checkable
class Regularized(Protocol):
    """A module (anywhere in a model) with a term to add to the loss, e.g. a
    Keras-style l2 penalty on some layers' weights."""

    def regularization(self) -> Tensor:
        """A scalar tensor added to the training loss at every step."""
        ...


@runtime_checkable
class EpochAware(Protocol):
    """A dataset whose items depend on the epoch (augmentation seeded by
    ``(seed, epoch, index)``); the engine calls :meth:`set_epoch` before each
    training epoch."""

    def set_epoch(self, epoch: int) -> None: ...


def _require_module(obj: Any, what: str) -> None:
    if not isinstance(obj, nn.Module):
        raise PluginContractError(f"{what} must be a torch.nn.Module, got {type(obj).__name__}")


def check_attention_network(net: Any, what: str = "the attention network") -> nn.Module:
    """``net`` if it is an ``nn.Module`` (the :class:`AttentionNetwork` contract)."""
    _require_module(net, what)
    return net


def check_feature_network(net: Any, what: str = "the feature network") -> nn.Module:
    """``net`` if it keeps the :class:`FeatureNetwork` contract.

    Raises:
        PluginContractError: not a module, or no positive int ``out_features``.
    """
    _require_module(net, what)
    size = getattr(net, "out_features", None)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise PluginContractError(
            f"{what} ({type(net).__name__}) must expose its output size D as a positive int "
            f"attribute `out_features` (the FeatureNetwork contract), got {size!r}"
        )
    return net


def check_instance(obj: Any, base: type, what: str) -> Any:
    """``obj`` if it is an instance of the plugin base class ``base``."""
    if not isinstance(obj, base):
        raise PluginContractError(
            f"{what} built a {type(obj).__name__}, not a subclass of "
            f"{base.__module__}.{base.__qualname__}"
        )
    return obj


def regularization_terms(model: nn.Module) -> Iterator[Tensor]:
    """The loss terms of every :class:`Regularized` submodule of ``model``
    (``model`` itself excluded: its loss is the task loss)."""
    for module in model.modules():
        if module is not model and isinstance(module, Regularized):
            yield module.regularization()


def set_epoch(dataset: Any, epoch: int) -> None:
    """Tell an :class:`EpochAware` dataset which epoch starts; others are left alone."""
    if isinstance(dataset, EpochAware):
        dataset.set_epoch(epoch)
