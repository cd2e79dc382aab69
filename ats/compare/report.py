"""``ats-compare``: several runs side by side, as two figures and a table.

:func:`compare_runs` reads the runs, checks that they were tested on the same
images, and writes ``curves.png``, ``selections.png`` and ``compare.md``
(docs/training.md, "Comparing runs").
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

from ats.compare.figures import Column, column_of, save_curves, save_selections
from ats.compare.runs import Run, check_same_test_set, load_model, load_run
from ats.train.checkpoint import atomic_write_text

__all__ = ["compare_runs", "markdown_table", "selection_columns", "first_test_items"]

CURVES, SELECTIONS, TABLE = "curves.png", "selections.png", "compare.md"


def markdown_table(runs: Sequence[Run]) -> str:
    """One row per run: model, epochs, final test error (± std over sampling
    seeds), best test error (its epoch), median seconds per epoch; and the
    final fraction of patches read on target when a run records it."""
    stats = [run.stats() for run in runs]
    hits = any(s["final_hit_rate"] is not None for s in stats)
    header = ["run", "model", "epochs", "final test error", "best test error (epoch)",
              "seconds per epoch"] + (["patches on target"] if hits else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run, s in zip(runs, stats):
        final = f"{s['final_test_error']:.4f}"
        if s["final_test_error_std"] is not None:
            final += f" ± {s['final_test_error_std']:.4f}"
        seconds = "" if s["seconds_per_epoch"] is None else f"{s['seconds_per_epoch']:.2f}"
        name = run.label.replace("|", "\\|")  # a label must not split the row
        cells = [name, run.config.model, str(s["epochs"]), final,
                 f"{s['best_test_error']:.4f} ({s['best_epoch']})", seconds]
        if hits:
            cells.append("" if s["final_hit_rate"] is None else f"{s['final_hit_rate']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def first_test_items(run: Run, count: int) -> dict[str, Any] | None:
    """The first ``count`` items of the test set of ``run``'s configuration,
    collated (the global generators seeded by the run's seed first, as its
    training did); None when its images are not 2-D (nothing to draw on)."""
    from torch.utils.data import default_collate

    from ats.task import get_task
    from ats.train import rng

    rng.seed_everything(run.config.seed)
    _, test = get_task(run.config.task).datasets(run.config)
    batch = default_collate([test[i] for i in range(min(count, len(test)))])
    return batch if batch["x_low"].ndim == 4 else None


def selection_columns(runs: Sequence[Run], batch: dict[str, Any], *, seed: int,
                      device: Any) -> list[Column]:
    """Each run's column of selections.png (:class:`ats.compare.figures.Column`):
    its latest checkpoint's model on ``batch``, the sampling generator seeded
    by ``seed`` (the same for every run)."""
    from ats.task import get_task
    from ats.train.devices import resolve_device

    device = resolve_device(device) if isinstance(device, str) else device
    task = get_task(runs[0].config.task)
    objective = task.objective(runs[0].config)
    columns = []
    for run in runs:  # one model in memory at a time
        model, weights_from = load_model(run, task, device)
        columns.append(column_of(run, model, batch, device, seed=seed, objective=objective,
                                 weights_from=weights_from))
        del model
    return columns


def compare_runs(run_dirs: Sequence[str | Path], out: str | Path, *, images: int = 4,
                 labels: Sequence[str] | None = None, seed: int = 0,
                 data_dir: str | None = None, device: str = "cpu",
                 log: Callable[[str], None] = lambda message: None) -> dict[str, Path]:
    """Write ``curves.png``, ``selections.png`` and ``compare.md`` of the runs
    in ``run_dirs`` into ``out``; returns the paths written.

    Args:
        images: the first this many test images are drawn.
        labels: one per run (default: "model (directory name)").
        seed: seeds every model's sampling generator.
        data_dir: where the data files are, for every run (default: each
            run's own ``data_dir``).
        device: where the models run (``auto``, ``cpu``, ``cuda``, ...).

    Raises:
        ValueError: no runs, a wrong ``images`` or number of ``labels``, a
            directory that is not a run or has no evaluation, runs of
            different tasks or data options.
    """
    if not run_dirs:
        raise ValueError("run_dirs: give at least one run directory")
    if not isinstance(images, int) or images < 1:
        raise ValueError(f"images must be an integer >= 1, got {images!r}")
    if labels is not None and len(labels) > 0 and len(labels) != len(run_dirs):
        raise ValueError(f"labels: give one per run ({len(run_dirs)} runs), got {len(labels)}: "
                         f"{list(labels)}")
    names = list(labels) if labels else [None] * len(run_dirs)
    runs = [load_run(path, name) for path, name in zip(run_dirs, names)]
    if data_dir is not None:  # the models of some tasks read their data's labels too
        for run in runs:
            run.config = dataclasses.replace(run.config, data_dir=str(data_dir))
    check_same_test_set(runs)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {out} is a file, not a directory")
    out.mkdir(parents=True, exist_ok=True)
    written = {"curves": out / CURVES, "table": out / TABLE}
    save_curves(written["curves"], runs)
    atomic_write_text(written["table"], markdown_table(runs))
    batch = first_test_items(runs[0], images)
    if batch is None:
        log(f"{SELECTIONS} not drawn: the images of task {runs[0].config.task!r} are not 2-D")
    else:
        from ats.task import get_task

        path = out / SELECTIONS
        objective = get_task(runs[0].config.task).objective(runs[0].config)
        save_selections(path, batch, selection_columns(runs, batch, seed=seed, device=device),
                        objective=objective)
        written["selections"] = path
    return written
