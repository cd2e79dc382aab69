"""Values typed by annotations: parsed from text, coerced from JSON, checked against bounds.

The machinery under :mod:`ats.config` and the tasks' options dataclasses: a
field's *type annotation* (``int``, ``float``, ``bool``, ``str``,
``Literal[...]``, ``X | None``, ``tuple[int, ...]`` and unions of those) says
how a value typed by a user is parsed and what a value read from JSON must be;
the bounds in its metadata (:func:`setting`) are checked per element. Errors
name the setting. See docs/configuration.md.

This module imports nothing from ``ats``.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import numbers
import types
import typing
from dataclasses import field
from typing import Any, Literal, Mapping

__all__ = ["check_fields", "coerce_value", "field_types", "parse_assignment", "parse_value",
           "setting"]


def setting(default: Any = dataclasses.MISSING, *, doc: str = "", ge: float | None = None,
            gt: float | None = None, le: float | None = None, lt: float | None = None,
            default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with a help text and bounds (checked per element for tuples).

    ``ge``/``gt``/``le``/``lt``: value >= / > / <= / < the bound.
    """
    metadata = {"doc": doc, "bounds": {k: v for k, v in
                                       (("ge", ge), ("gt", gt), ("le", le), ("lt", lt))
                                       if v is not None}}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# -- parsing ---------------------------------------------------------------------


def parse_assignment(text: str) -> tuple[str, str]:
    """``"key=value"`` -> ``("key", "value")`` with a clear error otherwise."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set expects key=value, got {text!r}")
    return key.strip(), value.strip()


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "none"
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is tuple:
        item = typing.get_args(annotation)[0]
        plural = {int: "integers", float: "numbers", str: "strings"}.get(item, _type_name(item))
        return f"a tuple of {plural} like (1, 2)"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_value(name: str, raw: str, annotation: Any) -> Any:
    """Parse the command-line text ``raw`` to the type ``annotation``.

    Raises:
        ValueError: ``"{name} expects {type}, got {raw!r}"``.
    """
    try:
        return _parse(raw.strip(), annotation)
    except (ValueError, TypeError, SyntaxError):
        raise ValueError(f"{name} expects {_type_name(annotation)}, got {raw!r}") from None


def _parse(text: str, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in _union_order(typing.get_args(annotation)):
            try:
                return _parse(text, option)
            except (ValueError, TypeError, SyntaxError):
                continue
        raise ValueError(text)
    if annotation is type(None):
        if text.lower() in ("none", "null"):
            return None
        raise ValueError(text)
    if origin is Literal:
        for option in typing.get_args(annotation):
            if text == str(option):
                return option
        raise ValueError(text)
    if origin is tuple:
        item = typing.get_args(annotation)[0]
        inner = text.strip("()[] ")
        if item is int:  # sizes are also written 32x48
            inner = inner.replace("x", ",")
        parts = [p for p in inner.split(",") if p.strip()] if inner else []
        return tuple(_parse(p.strip(), item) for p in parts)
    if annotation is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(text)
    if annotation is int:
        return int(text, 10)
    if annotation is float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(text)
        return value
    if annotation is str:
        return text
    if annotation is Any or annotation is object:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    raise TypeError(f"cannot parse values of type {annotation!r}")


def _union_order(options: tuple[Any, ...]) -> list[Any]:
    # None first ("none" is never another type's value), then the narrow types.
    rank = {type(None): 0, bool: 1, int: 2, float: 3}
    return sorted(options, key=lambda a: rank.get(a, 4))


# -- type and bound checks -----------------------------------------------------------


def coerce_value(name: str, value: Any, annotation: Any) -> Any:
    """``value`` as the type ``annotation`` (lists to tuples, ints to floats); a
    ``ValueError`` naming ``name`` when it is not of that type."""
    result = _coerce(value, annotation)
    if result is _INVALID:
        raise ValueError(f"{name} expects {_type_name(annotation)}, got {value!r}")
    return result


_INVALID = object()


def _coerce(value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in _union_order(typing.get_args(annotation)):
            result = _coerce(value, option)
            if result is not _INVALID:
                return result
        return _INVALID
    if annotation is type(None):
        return None if value is None else _INVALID
    if origin is Literal:
        return value if value in typing.get_args(annotation) else _INVALID
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return _INVALID
        item = typing.get_args(annotation)[0]
        items = tuple(_coerce(v, item) for v in value)
        return _INVALID if any(v is _INVALID for v in items) else items
    if annotation is bool:
        return value if isinstance(value, bool) else _INVALID
    if annotation is int:
        return int(value) if _is_int(value) else _INVALID
    if annotation is float:
        if _is_int(value) or (isinstance(value, numbers.Real) and not isinstance(value, bool)
                              and math.isfinite(value)):
            return float(value)
        return _INVALID
    if annotation is str:
        return value if isinstance(value, str) else _INVALID
    if typing.get_origin(annotation) is dict or annotation is dict:
        return value if isinstance(value, dict) else _INVALID
    return value  # Any and other annotations: not checked here


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


_BOUND_WORDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _check_bounds(name: str, value: Any, bounds: Mapping[str, float]) -> None:
    if not bounds or value is None:
        return
    for v in value if isinstance(value, tuple) else (value,):
        ok = all({"ge": v >= b, "gt": v > b, "le": v <= b, "lt": v < b}[k] for k, b in bounds.items())
        if ok:
            continue
        if bounds == {"ge": 1} and isinstance(v, int):
            rule = "a positive integer"
        elif bounds == {"gt": 0}:
            rule = "positive"
        else:
            rule = " and ".join(f"{_BOUND_WORDS[k]} {b}" for k, b in bounds.items())
        where = " (every element)" if isinstance(value, tuple) else ""
        raise ValueError(f"{name} must be {rule}{where}, got {value!r}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_fields(obj: Any, *, skip: tuple[str, ...] = (), prefix: str = "") -> None:
    """Coerce every field of the dataclass instance ``obj`` to its annotation and
    check its bounds (``setting(..., ge=...)``); raise ``ValueError`` naming the
    first bad field (``prefix + name``)."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        if f.name in skip:
            continue
        name = prefix + f.name
        value = coerce_value(name, getattr(obj, f.name), hints[f.name])
        _check_bounds(name, value, f.metadata.get("bounds", {}))
        object.__setattr__(obj, f.name, value)  # also for frozen dataclasses


def field_types(cls: type) -> dict[str, Any]:
    """Field name -> type annotation of the dataclass ``cls``."""
    hints = _hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}
