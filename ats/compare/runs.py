"""What ``ats-compare`` reads from a run directory: its configuration, its
metrics, its latest weights; and the check that runs were tested alike.

A run directory is what ``ats-run --output DIR`` writes (config.json,
metrics.csv, checkpoint.pt, ...). A run that is still training is read as it
stands: metrics.csv and the checkpoint are replaced atomically, so each is
whole, and the checkpoint may be a little ahead of metrics.csv.
"""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ats.classifier import Classifier
from ats.config import RunConfig
from ats.task import Task
from ats.train.checkpoint import load_latest_checkpoint
from ats.train.devices import memory_format

__all__ = ["Run", "check_same_test_set", "load_model", "load_run", "read_metrics"]

CONFIG, METRICS, CHECKPOINT = "config.json", "metrics.csv", "checkpoint.pt"


@dataclass
class Run:
    """One run directory, read.

    Attributes:
        path: the directory.
        label: its name in figures and tables.
        config: its configuration (config.json).
        metrics: metrics.csv, one dict per epoch (numbers, None where empty).
    """

    path: Path
    label: str
    config: RunConfig
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tested(self) -> list[dict[str, Any]]:
        """The epochs that were evaluated (a test error was recorded)."""
        return [m for m in self.metrics if m.get("test_error") is not None]

    def stats(self) -> dict[str, Any]:
        """The numbers of the comparison table: epochs, final and best test
        error, median seconds per epoch, the final fraction of patches read on
        target (``test_hit_rate``, None when the run does not record it)."""
        tested = self.tested
        final, best = tested[-1], min(tested, key=lambda m: m["test_error"])
        seconds = [m["epoch_seconds"] for m in self.metrics if m.get("epoch_seconds") is not None]
        return {
            "epochs": len(self.metrics),
            "final_test_error": final["test_error"],
            "final_test_error_std": final.get("test_error_std"),
            "final_epoch": final["epoch"],
            "best_test_error": best["test_error"],
            "best_epoch": best["epoch"],
            "seconds_per_epoch": statistics.median(seconds) if seconds else None,
            "final_hit_rate": final.get("test_hit_rate"),
        }


#: the columns of metrics.csv the comparison reads; each must hold numbers
USED_COLUMNS = ("epoch", "test_error", "test_error_std", "train_entropy", "epoch_seconds",
                "test_hit_rate")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """metrics.csv as one dict per row: ``epoch`` an int, the other columns
    floats (a column this module does not read may hold text), None where a
    cell is empty (e.g. not evaluated that epoch).

    Raises:
        ValueError: no ``epoch`` column, or a column it reads holds text.
    """
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        if "epoch" not in (reader.fieldnames or ()):
            raise ValueError(f"{path} is not a run's metrics.csv: it has no epoch column")
    out = []
    for row in rows:
        record: dict[str, Any] = {}
        for key, text in row.items():
            if key is None:  # more cells than the header names: not ours to guess
                raise ValueError(f"{path}: a row has more cells than the header has columns")
            text = (text or "").strip()
            try:
                record[key] = None if text == "" else (int(text) if key == "epoch" else
                                                       float(text))
            except ValueError:
                if key in USED_COLUMNS:
                    raise ValueError(f"{path}: column {key!r} holds {text!r}, not a "
                                     "number") from None
                record[key] = text  # a column added later, e.g. text: kept, unused
        out.append(record)
    return out


def load_run(path: str | Path, label: str | None = None) -> Run:
    """Read the run in ``path``; ``label`` defaults to "model (directory name)".

    Raises:
        ValueError: ``path`` is not a run directory (no config.json, or one
            that is not a run's), or the run has no evaluation yet.
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path} is not a run directory: no such directory")
    if not (path / CONFIG).is_file():
        raise ValueError(f"{path} is not a run directory: it has no {CONFIG} "
                         "(`ats-run --output DIR` writes one)")
    try:
        config = RunConfig.from_dict(_read_json(path / CONFIG))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not a run directory: its {CONFIG} is not a run "
                         f"configuration ({exc})") from None
    metrics = read_metrics(path / METRICS) if (path / METRICS).is_file() else []
    run = Run(path, label or f"{config.model} ({path.resolve().name})", config, metrics)
    if not run.tested:
        done = (f"{len(metrics)} epoch(s) in {METRICS}, none evaluated" if metrics else
                f"no {METRICS} yet, no epoch finished")
        raise ValueError(f"the run {path} has no evaluation to compare yet ({done}; it is "
                         f"evaluated every {config.eval_every} epoch(s) and at its last)")
    return run


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"a JSON {type(value).__name__}, not an object")
    return value


def check_same_test_set(runs: Sequence[Run]) -> None:
    """Every run is of the first run's task with the same data options (but
    those of ``Task.training_only_options``) and data directory, so that the
    first run's test set is every run's.

    Raises:
        ValueError: naming each differing option and the runs' values.
    """
    first = runs[0]
    differences = []
    training_only = _training_only_options(first.config.task)
    for run in runs[1:]:
        if run.config.task != first.config.task:
            differences.append(f"task: {first.config.task!r} ({first.path}) vs "
                               f"{run.config.task!r} ({run.path})")
            continue  # another task's data options are another set of names
        if _where(first.config.data_dir) != _where(run.config.data_dir):
            differences.append(f"data_dir: {first.config.data_dir!r} ({first.path}) vs "
                               f"{run.config.data_dir!r} ({run.path}) (the same files in two "
                               "places: pass --data-dir)")
        a, b = first.config.data, run.config.data
        for name in sorted((set(a) | set(b)) - training_only):
            if a.get(name) != b.get(name):
                differences.append(f"data.{name}: {a.get(name)!r} ({first.path}) vs "
                                   f"{b.get(name)!r} ({run.path})")
    if differences:
        raise ValueError("the runs were not tested on the same images; they differ in "
                         + "; ".join(differences))


def _training_only_options(task: str) -> frozenset[str]:
    from ats.task import get_task

    try:
        return get_task(task).training_only_options
    except KeyError:  # an unknown task is named when its model is built
        return frozenset()


def _where(data_dir: str | None) -> Path | None:
    return None if data_dir is None else Path(data_dir).expanduser().resolve()


def load_model(run: Run, task: Task, device: torch.device) -> tuple[Classifier, dict[str, Any]]:
    """``run``'s model with the weights of its latest checkpoint (or the one
    before it, when that is damaged), on ``device`` in the layout it trained
    in, in evaluation mode; and where the weights are from: ``{"epoch",
    "step"}`` (``step`` None at an epoch's end).

    Raises:
        FileNotFoundError, CheckpointError: no usable checkpoint.
        ValueError: the checkpoint is of another task or model than config.json.
    """
    state, path = load_latest_checkpoint(run.path / CHECKPOINT, map_location="cpu")
    saved = state.get("config", {})
    for key in ("task", "model"):
        if saved.get(key) != getattr(run.config, key):
            raise ValueError(f"the checkpoint {path} is for {key}={saved.get(key)!r}, but "
                             f"{run.path / CONFIG} says {getattr(run.config, key)!r}")
    model = task.build_model(run.config)
    model.load_state_dict(state["model"])
    model = model.to(device, memory_format=memory_format(run.config.memory_format, device))
    model.eval()
    partial = state.get("partial")
    where = ({"epoch": partial["epoch"], "step": partial["step"]} if partial else
             {"epoch": int(state.get("epoch", 0)), "step": None})
    return model, where
