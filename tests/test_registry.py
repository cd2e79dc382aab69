"""The Registry class, the five registries and entry-point plugins."""

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


def test_the_five_registries_hold_the_builtins():
    assert set(reg.REGISTRIES) == {"attention", "feature", "sampler", "extractor", "task"}
    assert {"with_replacement", "without_replacement"} <= set(reg.sampler.names())
    assert {"reference", "numba", "torch", "auto"} <= set(reg.extractor.names())


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


def test_a_broken_plugin_warns_by_name_and_the_rest_keeps_working(site):
    path, added = site
    _make_distribution(
        path, "ats_test_plugin_mixed",
        {"good": "ats_test_plugin_mixed", "broken": "ats_test_plugin_missing_module"},
        PLUGIN_BODY.format(name="first_only_2"),
    )
    added.append("first_only_2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        failed = load_plugins(reload=True)
    assert failed == ["broken"]
    messages = [str(w.message) for w in caught if issubclass(w.category, PluginLoadWarning)]
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
