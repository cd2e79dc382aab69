"""The Registry class, the six registries and entry-point plugins."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from ats import registry as reg
from ats.registry import PluginLoadWarning, Registry, load_plugins


def test_register_get_build_and_names():
    r = Registry("widget")

    @r.register("box")
    class Box:
        def __init__(self, size: int = 1):
            self.size = size

    @r.register()
    def make_ball(radius=2):
        return ("ball", radius)

    assert r.get("box") is Box
    assert r.build("box", size=3).size == 3
    assert r.build("make_ball", radius=5) == ("ball", 5)
    assert r.names() == ["box", "make_ball"]
    assert r.names("b*") == ["box"]
    assert "box" in r and "cube" not in r
    assert len(r) == 2


def test_unknown_name_lists_known_names_and_the_closest_match():
    r = Registry("sampler")
    r.add("with_replacement", object)
    r.add("without_replacement", object)
    with pytest.raises(KeyError) as info:
        r.get("without_replacment")
    msg = str(info.value)
    assert "unknown sampler 'without_replacment'" in msg
    assert "known: with_replacement, without_replacement" in msg
    assert "Did you mean 'without_replacement'?" in msg
    # a user typo is also a ValueError, for callers validating input
    with pytest.raises(ValueError):
        r.get("nope")


def test_duplicate_name_is_an_error_unless_override():
    r = Registry("feature")
    r.add("net", int)
    with pytest.raises(ValueError, match="'net' is already registered.*override=True"):
        r.add("net", float)
    r.add("net", float, override=True)
    assert r.get("net") is float
    r.add("net", float)  # registering the very same object again is harmless


def test_bare_decorator_is_rejected_with_a_hint():
    r = Registry("task")
    with pytest.raises(TypeError, match=r"use @register\(\)"):
        r.register(lambda: None)


def test_the_seven_registries_hold_the_builtins():
    assert set(reg.REGISTRIES) == {"attention", "feature", "sampler", "extractor", "task",
                                   "source", "model"}
    assert {"ats", "dps", "ips", "cnn_low", "cnn_full"} <= set(reg.model.names())
    assert {"with_replacement", "without_replacement"} <= set(reg.sampler.names())
    assert {"reference", "numba", "torch", "auto"} <= set(reg.extractor.names())
    assert {"array", "npy", "tiff", "zarr", "openslide", "pillow"} <= set(reg.source.names())


# -- third-party plugins through entry points ---------------------------------


def _make_distribution(site: Path, module: str, entry_points: dict[str, str], body: str):
    """A distribution installed on ``site``: a module plus dist-info metadata."""
    (site / f"{module}.py").write_text(textwrap.dedent(body))
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[ats.plugins]\n{lines}\n")
    (info / "RECORD").write_text("")


PLUGIN_BODY = """
    import torch
    from ats.core.sampling import WithReplacement
    from ats.registry import sampler

    @sampler.register("{name}")
    class FirstOnly(WithReplacement):
        '''Always draws position 0 (a test plugin).'''
        def _draw(self, flat, n, generator):
            return torch.zeros(flat.shape[0], n, dtype=torch.long, device=flat.device)
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    added = []
    yield tmp_path, added
    for name in added:
        reg.sampler.remove(name)
    for mod in [m for m in sys.modules if m.startswith("ats_test_plugin")]:
        del sys.modules[mod]
    monkeypatch.undo()  # take the test distributions off sys.path before reloading
    load_plugins(reload=True)


def test_entry_point_plugin_is_discovered_and_usable(site):
    path, added = site
    _make_distribution(
        path, "ats_test_plugin_ok", {"firstonly": "ats_test_plugin_ok"},
        PLUGIN_BODY.format(name="first_only"),
    )
    added.append("first_only")
    load_plugins(reload=True)
    assert "first_only" in reg.sampler.names()
    s = reg.sampler.build("first_only")
    samples = s.sample(torch.full((2, 3, 3), 1 / 9), 4)
    assert (samples.indices == 0).all()


def _reload_recording_warnings() -> tuple[list[str], list[str]]:
    """Reload the plugins; the names that failed and the PluginLoadWarning texts."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        failed = load_plugins(reload=True)
    return failed, [str(w.message) for w in caught if issubclass(w.category, PluginLoadWarning)]


def test_a_broken_plugin_warns_by_name_and_the_rest_keeps_working(site):
    path, added = site
    _make_distribution(
        path, "ats_test_plugin_mixed",
        {"good": "ats_test_plugin_mixed", "broken": "ats_test_plugin_missing_module"},
        PLUGIN_BODY.format(name="first_only_2"),
    )
    added.append("first_only_2")
    failed, messages = _reload_recording_warnings()
    assert failed == ["broken"]
    assert len(messages) == 1 and "'broken'" in messages[0]
    assert "ats_test_plugin_missing_module" in messages[0]
    assert "first_only_2" in reg.sampler.names()
    assert "without_replacement" in reg.sampler.names()


def test_ats_plugins_command_lists_a_third_party_plugin(tmp_path):
    """A fresh process: discovery through real distribution metadata."""
    _make_distribution(
        tmp_path, "ats_test_plugin_cli", {"cli": "ats_test_plugin_cli"},
        PLUGIN_BODY.format(name="from_a_plugin"),
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", "from ats.cli import plugins_main; plugins_main()"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    for kind in ("attention", "feature", "sampler", "extractor", "task"):
        assert f"{kind}" in out.stdout
    assert "from_a_plugin" in out.stdout
    assert "ats_test_plugin_cli" in out.stdout  # where it comes from


# -- the built-ins are plugins like any other -------------------------------------


def test_builtins_are_found_through_the_projects_own_entry_points():
    ours = [ep for ep in reg._entry_points() if reg._distribution(ep) == "ats"]
    assert {(ep.name, ep.value) for ep in ours} == {("builtin", "ats.plugins"), ("tasks", "tasks")}
    # the project's own come first, so a third party cannot claim a built-in name
    names = [reg._distribution(ep) for ep in reg._entry_points()]
    assert names[: len(ours)] == ["ats"] * len(ours)
    assert not hasattr(reg, "BUILTIN_PLUGIN_MODULES")


class _BrokenEntryPoint:
    name, value, group = "tasks_broken", "tasks.does_not_exist", "ats.plugins"

    def load(self):
        import importlib

        return importlib.import_module(self.value)


def test_a_broken_builtin_is_reported_by_name_like_any_plugin(monkeypatch):
    real = reg._entry_points()
    monkeypatch.setattr(reg, "_entry_points", lambda: [real[0], _BrokenEntryPoint(), *real[1:]])
    failed, messages = _reload_recording_warnings()
    assert failed == ["tasks_broken"]
    assert len(messages) == 1 and "'tasks_broken'" in messages[0]
    assert "tasks.does_not_exist" in messages[0] and "\n" not in messages[0]
    assert "mega_mnist" in reg.task.names() and "numba" in reg.extractor.names()
    monkeypatch.undo()
    load_plugins(reload=True)


def test_modules_named_in_the_environment_are_loaded(tmp_path, monkeypatch):
    (tmp_path / "ats_env_plugin.py").write_text(PLUGIN_BODY.format(name="from_env").replace(
        "\n    ", "\n"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(reg.PLUGINS_ENV, "ats_env_plugin")
    try:
        load_plugins(reload=True)
        assert "from_env" in reg.sampler.names()
    finally:
        reg.sampler.remove("from_env")
        sys.modules.pop("ats_env_plugin", None)
        monkeypatch.delenv(reg.PLUGINS_ENV)
        load_plugins(reload=True)


def test_ats_plugins_shows_a_plugins_own_docstring_not_an_inherited_one():
    from click.testing import CliRunner
    from torch import nn

    from ats.cli import plugins_main

    class Undocumented(nn.Module):
        pass

    class Documented(nn.Module):
        """Tiny net. More words."""

    reg.feature.add("undocumented_test", Undocumented)
    reg.feature.add("documented_test", Documented)
    try:
        output = CliRunner().invoke(plugins_main, ["feature"]).output
    finally:
        reg.feature.remove("undocumented_test")
        reg.feature.remove("documented_test")
    lines = {line.split()[0]: line for line in output.splitlines() if "_test " in line}
    assert lines["undocumented_test"].rstrip().endswith("test_registry")  # module, no summary
    assert lines["documented_test"].rstrip().endswith("Tiny net.")


def test_a_broken_plugin_module_is_reported_once(monkeypatch):
    monkeypatch.setenv(reg.PLUGINS_ENV, "ats_no_such_module_env")
    try:
        first, messages = _reload_recording_warnings()
        assert first == ["ats_no_such_module_env"] and len(messages) == 1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            load_plugins()
            load_plugins(["ats_no_such_module_arg"])
            load_plugins(["ats_no_such_module_arg"])
            reg.sampler.names()
        texts = [str(w.message) for w in caught]
        assert len(texts) == 1 and "'ats_no_such_module_arg'" in texts[0]
        assert "ModuleNotFoundError: No module named 'ats_no_such_module_arg'" in texts[0]
    finally:
        monkeypatch.delenv(reg.PLUGINS_ENV)
        load_plugins(reload=True)
