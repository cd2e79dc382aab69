"""The README works as written: its Python blocks run as pasted, and every
command it shows parses and builds its model."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ats.cli import bench_main, compare_main, make_main, plugins_main, run_main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
SHELL_LINES = [line.split("#")[0].strip()
               for block in re.findall(r"```bash\n(.*?)```", README, re.S)
               for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_readme_has_what_this_test_reads():
    assert len(PYTHON_BLOCKS) >= 2
    assert any(line.startswith("ats-run") for line in SHELL_LINES)


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_blocks_run_as_pasted(index, tmp_path):
    script = tmp_path / "block.py"
    script.write_text(PYTHON_BLOCKS[index])
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _ats_run_lines():
    for line in SHELL_LINES:
        if line.startswith("ats-run") and "--resume" not in line:
            yield line


@pytest.mark.parametrize("line", list(_ats_run_lines()))
def test_ats_run_commands_resolve_and_build(line, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = shlex.split(line)[1:]
    if "images" in args and "--data-dir" in args:
        # the task sizes its model from the folder's label table (the only file it reads)
        folder = tmp_path / args[args.index("--data-dir") + 1]
        folder.mkdir()
        (folder / "labels.csv").write_text("path,label\na.tif,cat\nb.tif,dog\n")
    result = CliRunner().invoke(run_main, [*args, "--print-config"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "runs").exists()  # nothing written


def test_the_plugin_example_works_from_the_command_line(tmp_path, monkeypatch):
    """The "Add a plugin" block, saved as a module, used by name with --plugin."""
    block = next(b for b in PYTHON_BLOCKS if "register(" in b)
    name = re.search(r'register\("(\w+)"\)', block).group(1)
    (tmp_path / "my_readme_plugin.py").write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path))
    from ats.registry import feature

    try:
        result = CliRunner().invoke(run_main, [
            "--task", "find_pattern", "--plugin", "my_readme_plugin", "--set",
            f"feature={name}", "--epochs", "1", "--set", "data.n_train=60", "--set",
            "data.n_test=20", "--set", "pictures=0", "--set", "eval_seeds=1",
            "--output", str(tmp_path / "run"), "--no-progress"])
        assert result.exit_code == 0, result.output
        config = (tmp_path / "run" / "config.json").read_text()
        assert f'"feature": "{name}"' in config
    finally:
        feature.remove(name)
        sys.modules.pop("my_readme_plugin", None)


def test_other_commands_shown_answer():
    for line in SHELL_LINES:
        if line.startswith("ats-plugins"):
            result = CliRunner().invoke(plugins_main, shlex.split(line)[1:])
            assert result.exit_code == 0, result.output
        elif line.startswith("ats-compare"):  # needs runs: its help, and the line parses
            result = CliRunner().invoke(compare_main, [*shlex.split(line)[1:], "--help"])
            assert result.exit_code == 0, result.output
        elif line.startswith(("ats-bench", "ats-make")):
            main = bench_main if line.startswith("ats-bench") else make_main
            result = CliRunner().invoke(main, [*shlex.split(line)[1:], "--help"])
            assert result.exit_code == 0, result.output
