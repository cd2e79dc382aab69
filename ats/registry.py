"""Plugin registries: attention and feature networks, samplers, extractors, tasks,
image sources, models (patch-selection methods).

A :class:`Registry` maps names to classes or factories::

    from ats.registry import sampler

    @sampler.register("my_sampler")
    class MySampler: ...

    s = sampler.build("my_sampler", some_option=3)

Plugins are found through the entry-point group ``ats.plugins``, whose values
are modules (or callables) to load: the built-in ones (``ats.plugins`` and
``tasks``, declared in the project's own ``setup.cfg``) exactly like a
third-party package's. Modules named in ``$ATS_PLUGINS`` (comma-separated) or
given to :func:`load_plugins` (``ats-run --plugin``) are imported too, so a
plugin in a plain module on ``sys.path`` needs no packaging. Discovery is
lazy: nothing is imported until the first lookup, so ``import ats`` stays
cheap. A plugin that fails to import is reported once, with a one-line
:class:`PluginLoadWarning` naming it, and the others keep working.
See docs/plugins.md.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import os
import threading
import warnings
from importlib import metadata
from typing import Any, Callable, Iterator, TypeVar

__all__ = [
    "Registry",
    "PluginLoadWarning",
    "ENTRY_POINT_GROUP",
    "PLUGINS_ENV",
    "attention",
    "feature",
    "sampler",
    "extractor",
    "task",
    "source",
    "model",
    "REGISTRIES",
    "load_plugins",
]

ENTRY_POINT_GROUP = "ats.plugins"
#: environment variable naming plugin modules to import (comma-separated)
PLUGINS_ENV = "ATS_PLUGINS"

T = TypeVar("T")


class PluginLoadWarning(UserWarning):
    """A plugin module could not be imported; the others still work."""


class Registry:
    """A name -> object table for one kind of plugin.

    Args:
        kind: what the registry holds ("sampler", "extractor", ...); used in
            error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Any] = {}

    # -- registration -------------------------------------------------------
    def register(
        self, name: str | None = None, *, override: bool = False
    ) -> Callable[[T], T]:
        """Decorator that registers a class or factory under ``name``.

        ``name`` defaults to the object's ``__name__``. Registering a name that
        is taken raises :class:`ValueError` unless ``override=True``.
        """

        def decorator(obj: T) -> T:
            self.add(name or obj.__name__, obj, override=override)
            return obj

        if callable(name) and not isinstance(name, str):
            raise TypeError(
                f"{self.kind} registry: use @register() or @register('name'), "
                "not bare @register"
            )
        return decorator

    def add(self, name: str, obj: Any, *, override: bool = False) -> None:
        """Register ``obj`` under ``name`` (the non-decorator form)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries and not override and self._entries[name] is not obj:
            raise ValueError(
                f"{self.kind} {name!r} is already registered "
                f"(by {_describe(self._entries[name])}); pass override=True to replace it"
            )
        self._entries[name] = obj

    def remove(self, name: str) -> None:
        """Unregister ``name`` (mostly for tests)."""
        self._entries.pop(name, None)

    # -- lookup ---------------------------------------------------------------
    def get(self, name: str) -> Any:
        """The object registered under ``name``.

        Raises:
            KeyError (also a :class:`LookupError`): with the known names and
                the closest match when ``name`` is unknown.
        """
        load_plugins()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownPluginError(self._unknown_message(name)) from None

    def build(self, name: str, /, **kwargs: Any) -> Any:
        """Call the object registered under ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted registered names, optionally filtered by a glob ``pattern``."""
        load_plugins()
        names = sorted(self._entries)
        if pattern is not None:
            names = fnmatch.filter(names, pattern)
        return names

    def items(self) -> list[tuple[str, Any]]:
        return [(n, self._entries[n]) for n in self.names()]

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"

    def _unknown_message(self, name: object) -> str:
        known = sorted(self._entries)
        msg = f"unknown {self.kind} {name!r}; known: {', '.join(known) or '(none)'}"
        if isinstance(name, str):
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
            if close:
                msg += f". Did you mean {close[0]!r}?"
        if not known and not any(_distribution(ep) == "ats" for ep in _entry_points()):
            msg += (". No built-in plugins were found: they are declared as entry points, so "
                    "ats must be installed (pip install -e .)")
        return msg


class UnknownPluginError(KeyError, ValueError):
    """An unknown plugin name. Both a KeyError (lookup) and a ValueError (bad
    user input), so either ``except`` clause catches it."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def _describe(obj: Any) -> str:
    module = getattr(obj, "__module__", "?")
    return f"{module}.{getattr(obj, '__qualname__', repr(obj))}"


attention = Registry("attention")
feature = Registry("feature")
sampler = Registry("sampler")
extractor = Registry("extractor")
task = Registry("task")
#: image sources: lazy readers of image files and arrays (docs/sources.md)
source = Registry("source")
#: models a task trains (``--model``): ats, the CNN baselines, dps, ips (docs/methods.md)
model = Registry("model")

REGISTRIES: dict[str, Registry] = {
    "attention": attention,
    "feature": feature,
    "sampler": sampler,
    "extractor": extractor,
    "task": task,
    "source": source,
    "model": model,
}

_loaded = False
_loading = False
_lock = threading.RLock()
_imported: set[str] = set()  # plugin sources loaded or reported, each once


def load_plugins(modules: tuple[str, ...] | list[str] = (), *, reload: bool = False) -> list[str]:
    """Load the ``ats.plugins`` entry points (the project's own first), the
    modules named in ``$ATS_PLUGINS`` and ``modules``.

    Entry points and ``$ATS_PLUGINS`` are read once (again with ``reload``);
    ``modules`` are imported whenever given. Called by every lookup. Returns
    the names of the plugins that failed to load, each also reported once by
    a one-line :class:`PluginLoadWarning`.
    """
    global _loaded, _loading
    with _lock:
        failed: list[str] = []
        if _loading:
            return failed
        _loading = True
        try:
            if reload:
                _imported.clear()
            if not _loaded or reload:
                for ep in _entry_points():
                    _load_one(f"entry point {ep.name!r} ({ep.value})", ep.name, ep.load, failed)
                env = [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
                for module in env:
                    _load_one(f"module {module!r} (from ${PLUGINS_ENV})", module,
                              lambda m=module: importlib.import_module(m), failed)
                _loaded = True
            for module in modules:
                _load_one(f"module {module!r}", module,
                          lambda m=module: importlib.import_module(m), failed)
        finally:
            _loading = False
        return failed


def _load_one(what: str, name: str, load: Callable[[], Any], failed: list[str]) -> None:
    """Load one plugin source, reporting a failure once as a single line."""
    if what in _imported:
        return
    _imported.add(what)
    try:
        loaded = load()
        # An entry point may name a module (registering on import) or a
        # callable that registers when called.
        if callable(loaded) and not isinstance(loaded, type(importlib)):
            loaded()
    except Exception as exc:  # a broken plugin must not break ats
        failed.append(name)
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        warnings.warn(f"ats plugin {what} failed to load and is skipped: {reason}",
                      PluginLoadWarning, stacklevel=4)


def _entry_points() -> list[metadata.EntryPoint]:
    """The group's entry points, this project's own first (its built-ins must
    hold their names before a third-party plugin could claim one)."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = (ep.name, ep.value)
        if key not in seen:  # the same distribution can be visible twice on sys.path
            seen.add(key)
            unique.append(ep)
    return sorted(unique, key=lambda ep: _distribution(ep) != "ats")


def _distribution(ep: metadata.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return getattr(dist, "name", None)
