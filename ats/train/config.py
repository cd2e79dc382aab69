"""The resolved configuration of one run: task defaults < preset < command line.

One flat dataclass for everything the engine reads, plus ``data``: the
task's own options (image size, noise, fold, ...). ``--set key=value`` on the
command line reaches any field of either, with the value parsed to the type of
the default (``--set lr=3e-4``, ``--set data.noise=false``, or just
``--set noise=false`` when the name is unambiguous).
"""

from __future__ import annotations

import ast
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunConfig", "apply_overrides", "parse_assignment"]


@dataclass
class RunConfig:
    """Every setting of a training run (defaults are the task's; see Task)."""

    task: str = ""
    model: str = "ats"
    preset: str | None = None
    # optimisation
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    adam_eps: float = 1e-7  # Keras's default, not PyTorch's 1e-8 (ATS_SPEC 3.4)
    momentum: float = 0.9  # for optimizer="sgd"
    weight_decay: float = 0.0
    clip_norm: float | None = 1.0  # global gradient-norm clip, like Keras clipnorm
    lr_decay_at: tuple[int, ...] = ()  # epochs where lr is multiplied by lr_decay
    lr_decay: float = 0.1
    class_weights: bool = False
    # attention sampling
    attention: str = ""
    feature: str = ""
    n_patches: int = 10
    patch_size: int | tuple[int, ...] = 50
    receptive_field: int = 0
    sampler: str = "without_replacement"
    wor_grad: str = "unbiased"  # "original" reproduces the biased TF gradient
    extractor: str = "auto"
    entropy: float = 1e-4  # > 0 raises the attention's entropy
    smoothing: float = 1e-5
    # evaluation
    eval_every: int = 1
    eval_seeds: int = 5  # sampling seeds averaged at evaluation (ATS_SPEC 1.8)
    eval_topk: bool = False  # also evaluate with the N most probable patches
    pictures: int = 4  # fixed test images drawn at each evaluation
    # running
    device: str = "auto"
    seed: int = 0
    workers: int = 0
    data_dir: str | None = None
    output: str | None = None
    max_steps: int | None = None  # per epoch; for quick looks and benchmarks
    # the task's own options
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown configuration keys {unknown}; known: {sorted(known)}")
        values = dict(values)
        for key in ("lr_decay_at",):
            if key in values and values[key] is not None:
                values[key] = tuple(values[key])
        if isinstance(values.get("patch_size"), list):
            values["patch_size"] = tuple(values["patch_size"])
        return cls(**values)


def parse_assignment(text: str) -> tuple[str, str]:
    """``"key=value"`` -> ``("key", "value")`` with a clear error otherwise."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set expects key=value, got {text!r}")
    return key.strip(), value.strip()


def _parse_value(key: str, raw: str, default: Any) -> Any:
    """Parse ``raw`` to the type of ``default``."""
    lowered = raw.lower()
    if lowered in ("none", "null"):
        return None
    if isinstance(default, bool):
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key} expects true or false, got {raw!r}")
    try:
        literal = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        literal = raw
    if isinstance(default, str):
        return raw
    if default is None:  # no type to follow: a Python literal, else the text
        return literal
    if isinstance(default, float) and isinstance(literal, (int, float)) and not isinstance(literal, bool):
        return float(literal)
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(literal, int) and not isinstance(literal, bool):
            return literal
        if isinstance(literal, tuple) and key == "patch_size":
            return literal
        raise ValueError(f"{key} expects an integer, got {raw!r}")
    if isinstance(default, tuple):
        if isinstance(literal, (int, float)):
            return (literal,)
        if isinstance(literal, (list, tuple)):
            return tuple(literal)
        raise ValueError(f"{key} expects a tuple like (1, 2), got {raw!r}")
    return literal


def apply_overrides(config: RunConfig, assignments: dict[str, Any], *, parse: bool) -> RunConfig:
    """Return a copy of ``config`` with ``assignments`` applied.

    Args:
        assignments: field name (or ``data.name``, or an unambiguous data
            option name) -> value.
        parse: values are strings from the command line to parse to the
            type of the current value.

    Raises:
        ValueError: an unknown key (listing the known ones) or a bad value.
    """
    values = config.to_dict()
    data = dict(values.pop("data"))
    top = set(values)
    for key, value in assignments.items():
        target, name = (data, key[5:]) if key.startswith("data.") else (None, key)
        if target is None:
            if name in top:
                target = values
            elif name in data:
                target = data
            else:
                raise ValueError(
                    f"unknown setting {key!r}; settings: {', '.join(sorted(top))}; "
                    f"task data options: {', '.join(sorted(data)) or '(none)'}"
                )
        elif name not in data:
            raise ValueError(
                f"unknown task data option {name!r}; options: {', '.join(sorted(data)) or '(none)'}"
            )
        target[name] = _parse_value(key, value, target[name]) if parse and isinstance(value, str) else value
    values["data"] = data
    return RunConfig.from_dict(values)
