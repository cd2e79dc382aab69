"""What a run records: metrics.csv, TensorBoard (when installed), summary.json
and the lines printed after each epoch.

metrics.csv is rewritten atomically from the history kept in the
checkpoint, so the two never disagree after a crash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ats.train.checkpoint import atomic_write_json, atomic_write_text

__all__ = ["METRIC_COLUMNS", "MetricsLog", "format_duration", "format_record", "summarize"]

METRIC_COLUMNS = (
    "epoch", "lr", "train_loss", "train_error", "train_entropy", "test_loss", "test_error",
    "test_error_std", "test_error_topk", "test_hit_rate", "epoch_seconds", "samples_per_second",
)


class MetricsLog:
    """The metric files of one run directory (rank 0 only; a no-op without a
    directory)."""

    CSV = "metrics.csv"
    SUMMARY = "summary.json"

    def __init__(self, output: Path | None) -> None:
        self.output = output
        self.tensorboard = None
        if output is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional dependency
        except ImportError:
            pass
        else:
            self.tensorboard = SummaryWriter(str(output / "tensorboard"))

    def add_epoch(self, history: Sequence[dict[str, Any]]) -> None:
        """Record the last epoch of ``history`` (and rewrite the CSV from all of it)."""
        if self.output is None:
            return
        record = history[-1]
        if self.tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "epoch" and value is not None:
                    self.tensorboard.add_scalar(key, value, record["epoch"])
        lines = [",".join(METRIC_COLUMNS)]
        for r in history:
            lines.append(",".join(_csv_value(r.get(c)) for c in METRIC_COLUMNS))
        atomic_write_text(self.output / self.CSV, "\n".join(lines) + "\n")

    def write_summary(self, summary: dict[str, Any]) -> None:
        if self.output is not None:
            atomic_write_json(self.output / self.SUMMARY, summary)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.flush()


def summarize(history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The final and best test error and the first and last train loss."""
    tested = [h for h in history if h.get("test_error") is not None]
    best = min(tested, key=lambda h: h["test_error"]) if tested else None
    last = tested[-1] if tested else None
    return {
        "epochs": len(history),
        "final_test_error": last["test_error"] if last else None,
        "final_test_error_std": last["test_error_std"] if last else None,
        "best_test_error": best["test_error"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "final_train_loss": history[-1]["train_loss"] if history else None,
        "first_train_loss": history[0]["train_loss"] if history else None,
    }


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_record(r: dict[str, Any]) -> str:
    """One line per epoch: losses, errors, speed."""
    text = (f"epoch {r['epoch']}: train loss {r['train_loss']:.4f}, "
            f"train error {r['train_error']:.3f}")
    if r.get("test_error") is not None:
        text += f", test error {r['test_error']:.3f} ± {r['test_error_std']:.3f}"
    if r.get("test_error_topk") is not None:
        text += f" (top-N {r['test_error_topk']:.3f})"
    if r.get("test_hit_rate") is not None:
        text += f", patches on target {r['test_hit_rate']:.1%}"
    text += f", {r['samples_per_second']:.1f} samples/s, {format_duration(r['epoch_seconds'])}"
    return text
