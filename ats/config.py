"""The configuration of a run: one typed record, parsed and checked from its annotations.

A run is described by a :class:`RunConfig` (what the engine reads) whose
``data`` holds the task's own options, described by the task's options
dataclass (see :class:`ats.task.Task`). Values are layered: task defaults <
preset < command-line options < ``--set key=value``. Everything a user can
type is parsed by the *type annotation* of its field (``int``, ``float``,
``bool``, ``str``, ``Literal[...]``, ``X | None``, ``tuple[int, ...]`` and
unions of those) and checked against the bounds in its field's metadata,
before anything is written. The rules of what a resumed run may change live
here too (:data:`RESUMABLE`, :func:`resumed_config`), so that the Python API
and the command line enforce the same ones. See docs/configuration.md.

This module is at the bottom of the package: it imports only :mod:`ats.typed`
(the parsing and checking of values typed by annotations).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

from ats.typed import (
    check_fields,
    coerce_value,
    field_types,
    parse_assignment,
    parse_value,
    setting,
)

__all__ = [
    "RESUMABLE",
    "RunConfig",
    "apply_overrides",
    "check_fields",
    "parse_assignment",
    "parse_value",
    "resumed_config",
    "setting",
]


@dataclass
class RunConfig:
    """Every setting of a training run (defaults are the task's; see Task)."""

    task: str = setting("", doc="the task plugin")
    model: str = setting("ats", doc="the model plugin: ats, dps, ips, cnn_low, cnn_full, ...")
    preset: str | None = setting(None, doc="the task preset the run started from")
    # optimisation
    epochs: int = setting(10, ge=1, doc="epochs to train (in all, when resuming)")
    batch_size: int = setting(32, ge=1)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = setting(1e-3, gt=0, doc="learning rate")
    adam_eps: float = setting(1e-7, gt=0, doc="Keras's default, not PyTorch's 1e-8")
    momentum: float = setting(0.9, ge=0, doc="for optimizer=sgd")
    weight_decay: float = setting(0.0, ge=0)
    clip_norm: float | None = setting(1.0, gt=0, doc="global gradient-norm clip (Keras clipnorm)")
    lr_decay_at: tuple[int, ...] = setting((), ge=1, doc="epochs after which lr *= lr_decay")
    lr_decay: float = setting(0.1, gt=0)
    class_weights: bool = setting(False, doc="weight the loss by inverse class frequency")
    head_gain: float = setting(1.0, gt=0, doc="init gain of the classifier head (Glorot x gain)")
    patch_loss: float = setting(0.0, ge=0, doc="weight of the auxiliary loss of the head on "
                                               "each sampled patch, with the image's label")
    # attention sampling
    attention: str = setting("", doc="attention network (registry name)")
    feature: str = setting("", doc="feature network (registry name)")
    n_patches: int = setting(10, ge=1, doc="N, patches per image")
    patch_size: int | tuple[int, ...] = setting(50, ge=1, doc="in full-resolution pixels")
    receptive_field: int = setting(0, ge=0, doc="of the attention network, in x_low pixels")
    sampler: str = setting("without_replacement", doc="sampler (registry name)")
    wor_grad: Literal["unbiased", "original"] = setting(
        "unbiased", doc="without-replacement attention gradient; original = the biased TF one")
    extractor: str = setting("auto", doc="patch extraction backend (registry name)")
    entropy: float = setting(1e-4, doc="entropy regulariser strength; > 0 raises the entropy")
    smoothing: float = setting(1e-5, ge=0, lt=1, doc="every attention probability >= s/K")
    # evaluation
    eval_every: int = setting(1, ge=1, doc="evaluate every this many epochs")
    eval_seeds: int = setting(5, ge=1, doc="sampling seeds averaged at evaluation")
    eval_topk: bool = setting(False, doc="also evaluate with the N most probable patches")
    pictures: int = setting(4, ge=0, doc="test images drawn at each evaluation")
    # running
    device: str = setting("auto", doc="auto, cpu, cuda, cuda:1, ...")
    memory_format: Literal["auto", "channels_last", "contiguous"] = setting(
        "auto", doc="layout of the networks' images; auto = channels_last on the CPU "
                    "(oneDNN's fast convolutions), contiguous elsewhere")
    seed: int = setting(0, ge=0)
    workers: int = setting(0, ge=0, doc="DataLoader worker processes")
    data_dir: str | None = setting(None, doc="where the task's data files are")
    output: str | None = setting(None, doc="the run directory")
    max_steps: int | None = setting(None, ge=1, doc="steps per epoch at most (quick looks)")
    checkpoint_every: float | None = setting(
        600.0, ge=0, doc="seconds between checkpoints within an epoch (0: every step, none: "
                         "only at the end of epochs)")
    # the task's own options
    data: dict[str, Any] = setting(default_factory=dict, doc="the task's options")
    # the model's own options (``method.NAME``), typed by the model plugin's dataclass
    method: dict[str, Any] = setting(default_factory=dict, doc="the model's options")

    def __post_init__(self) -> None:
        check_fields(self, skip=DICT_FIELDS)
        for name in DICT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, dict):
                raise ValueError(f"{name} must be a dict of options, got {type(value).__name__}")
            # kept as JSON writes it (tuples as lists), so that a config equals itself
            # read back from config.json; the options dataclass types the values
            object.__setattr__(self, name, {k: _as_json_value(v) for k, v in value.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RunConfig":
        """From :meth:`to_dict` (or JSON) output; values are checked like any other."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown configuration keys {unknown}; known: {sorted(known)}")
        return cls(**values)


#: the fields holding a dict of options typed by a plugin's dataclass: the
#: task's (``data.NAME``) and the model's (``method.NAME``)
DICT_FIELDS = ("data", "method")


def _as_json_value(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_as_json_value(v) for v in value]
    return value


#: What may change when a run is resumed; everything else must match the checkpoint.
#: ``output`` is always the directory being resumed, wherever it was first written.
RESUMABLE = frozenset({"epochs", "device", "memory_format", "workers", "data_dir", "output",
                       "checkpoint_every"})


def resumed_config(saved: RunConfig, changes: Mapping[str, Any]) -> RunConfig:
    """``saved`` with ``changes`` applied, refusing any outside :data:`RESUMABLE`.

    Raises:
        ValueError: naming every setting that may not change.
    """
    current = saved.to_dict()
    fixed = sorted(k for k, v in changes.items()
                   if k not in RESUMABLE and k not in DICT_FIELDS and current.get(k) != v)
    for name in DICT_FIELDS:
        if name in changes:
            new, old = changes[name], current[name]
            fixed += sorted(f"{name}.{k}" for k in set(new) | set(old) if new.get(k) != old.get(k))
    if fixed:
        raise ValueError(
            f"cannot change {', '.join(fixed)} when resuming; only "
            f"{', '.join(sorted(RESUMABLE))} may change"
        )
    return apply_overrides(saved, dict(changes), parse=False)


# -- overrides -------------------------------------------------------------------------


def apply_overrides(config: RunConfig, assignments: Mapping[str, Any], *, parse: bool,
                    options: type | None = None,
                    method_options: Callable[[str], tuple[type, dict[str, Any]]] | None = None
                    ) -> RunConfig:
    """A copy of ``config`` with ``assignments`` applied and checked.

    Args:
        assignments: field name (or ``data.name``, ``method.name``, or a task
            option name that is not also a field) -> value.
        parse: the values are command-line strings, to parse by the fields'
            type annotations.
        options: the task's options dataclass, whose annotations type the
            ``data.*`` values; without it they keep the type of their current
            value.
        method_options: model name -> (its options dataclass, its defaults);
            ``method`` is then completed with the defaults of the model the
            result names, and emptied first when the model changes (a model's
            options belong to it). Without it ``method.*`` values are typed
            like data options without a dataclass.

    Raises:
        ValueError: an unknown key (listing the known ones) or a bad value.
    """
    values = config.to_dict()
    data = dict(values.pop("data"))
    method = dict(values.pop("method"))
    top = field_types(RunConfig)
    for name in DICT_FIELDS:
        top.pop(name)
    data_types = field_types(options) if options is not None else {}
    method_items: list[tuple[str, str, Any]] = []
    method_given = False
    for key, value in assignments.items():
        if key == "method":
            method, method_given = dict(coerce_value(key, value, dict)), True
            continue
        if key.startswith("method."):
            method_items.append((key, key[7:], value))
            continue
        if key == "data":
            data = dict(coerce_value(key, value, dict))
            continue
        if key.startswith("data."):
            target, name = data, key[5:]
            if name not in data and name not in data_types:
                raise ValueError(
                    f"unknown task data option {name!r}; options: "
                    f"{', '.join(sorted(set(data) | set(data_types))) or '(none)'}"
                )
        elif key in top:
            target, name = values, key
        elif key in data or key in data_types:
            target, name = data, key
        else:
            raise ValueError(
                f"unknown setting {key!r}; settings: {', '.join(sorted(top))}; task data "
                f"options: {', '.join(sorted(set(data) | set(data_types))) or '(none)'}"
            )
        if target is values:
            annotation = top[name]
        else:
            annotation = data_types.get(name) or _annotation_of(data.get(name))
        if parse and isinstance(value, str):
            value = parse_value(key, value, annotation)
        target[name] = coerce_value(key, value, annotation)
    model = values["model"]
    method_types: dict[str, Any] = {}
    if method_options is not None:
        if model != config.model and not method_given:
            method = {}  # the previous model's options mean nothing to this one
        cls, defaults = method_options(model)
        method_types = field_types(cls)
        method = {**defaults, **method}
    for key, name, value in method_items:
        if method_options is not None and name not in method_types:
            raise ValueError(
                f"unknown option {key!r} of model {model!r}; its options: "
                f"{', '.join(f'method.{n}' for n in sorted(method_types)) or '(none)'}"
            )
        annotation = method_types.get(name) or _annotation_of(method.get(name))
        if parse and isinstance(value, str):
            value = parse_value(key, value, annotation)
        method[name] = coerce_value(key, value, annotation)
    values["data"], values["method"] = data, method
    return RunConfig.from_dict(values)


def _annotation_of(value: Any) -> Any:
    """The type to parse a data option by when the task declares none."""
    if value is None:
        return Any
    if isinstance(value, tuple):
        return tuple[type(value[0]) if value else Any, ...]
    return type(value)
