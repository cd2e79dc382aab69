"""k-fold cross-validation: one run per fold, then the mean and spread.

For tasks whose data options hold a fold index (``Task.folds_key``, e.g.
``data.fold``) and a fold count (``data.k``). Each fold trains in
``OUTPUT/fold{i}``; a finished fold (with summary.json) is skipped and an
interrupted one resumed, so the whole protocol can be continued by running
the same command again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ats.config import RunConfig
from ats.task import Task
from ats.train.checkpoint import atomic_write_json

__all__ = ["cross_validate"]


def cross_validate(config: RunConfig, task: Task, *, progress: bool = True,
                   log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train and evaluate every fold; returns (and writes) the summary."""
    import json

    from ats.train.engine import SUMMARY, Trainer

    key = task.folds_key
    if key is None or key not in config.data or "k" not in config.data:
        raise ValueError(f"task {task.name!r} has no folds to cross-validate over")
    if config.output is None:
        raise ValueError("cross-validation needs an output directory (--output)")
    k = int(config.data["k"])
    root = Path(config.output)
    folds = []
    for fold in range(k):
        out = root / f"fold{fold}"
        fold_config = task.override(config, {f"data.{key}": fold, "output": str(out)})
        if (out / SUMMARY).is_file():
            summary = json.loads((out / SUMMARY).read_text())
            if summary.get("epochs") == config.epochs:
                folds.append(summary)
                continue
        trainer = Trainer(fold_config, task=task, progress=progress, log=log)
        resume = (out / "checkpoint.pt").is_file()
        folds.append(trainer.fit(resume=resume))
    errors = np.array([f["final_test_error"] for f in folds], dtype=float)
    result = {
        "task": task.name,
        "model": config.model,
        "k": k,
        "fold_test_errors": errors.tolist(),
        "mean_test_error": float(errors.mean()),
        "std_test_error": float(errors.std(ddof=1)) if k > 1 else 0.0,
        "config": config.to_dict(),
    }
    atomic_write_json(root / "cross_validation.json", result)
    return result
