"""``ats-bench train``: training time and peak memory per sample, ATS against
the peer selection methods DPS and IPS and the CNN baselines, side by side in
one run (each model with its own options' defaults, docs/methods.md).

Each model is measured in a fresh Python process, so one model's memory (or
an out-of-memory failure of the full-resolution CNN) cannot affect another's
figures. A step is forward + backward + optimiser step on a batch of the
task's real input sizes (synthetic values unless ``--real-data``).

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` above what the
model and batch occupy; on the CPU, the process's peak resident set size
(``VmHWM``, reset through ``/proc/self/clear_refs``) above its size after the
timed steps, with glibc told to return freed blocks to the OS (one extra step,
after the timing). Both are divided by the batch size.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

import click

__all__ = ["train_command", "measure"]

DEFAULT_MODELS = ("ats", "dps", "ips", "cnn_low", "cnn_full")


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak resident set size (Linux >= 4.0)
        return True
    except OSError:
        return False


def _return_freed_memory_to_the_os() -> None:
    """Make glibc give large freed blocks back (a fixed mmap threshold) and
    trim its heap, so that the resident set size follows the live tensors;
    by default it keeps freed activations resident and the peak would hide."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure(task_name: str, config_values: dict[str, Any], *, batch_size: int, steps: int,
            warmup: int, device: str, real_data: bool,
            budget: float | None = None) -> dict[str, Any]:
    """Time ``steps`` of the engine's own training step on one model, in this
    process; fewer (at least one) when the timed steps pass ``budget`` seconds."""
    import numpy as np
    import torch

    from ats.task import get_task
    from ats.train.engine import Trainer

    task = get_task(task_name)
    config = task.config(**{**config_values, "device": device, "batch_size": batch_size,
                            "output": None, "workers": 0})
    if real_data:
        train, test = task.datasets(config)
        items = [train[i % len(train)] for i in range(batch_size)]
    else:
        synthetic = task.synthetic_batch(config, batch_size,
                                         generator=torch.Generator().manual_seed(0))
        items = [{k: v[i] for k, v in synthetic.items()} for i in range(batch_size)]
        train = test = items
    trainer = Trainer(config, task=task, datasets=(train, test), progress=False,
                      log=lambda message: None)
    dev = trainer.device
    batch = torch.utils.data.default_collate(items)

    def step() -> None:
        trainer.train_step(batch)

    # Warm-up first: one-off costs (numba loading its cached kernels, lazy
    # allocations) are neither training time nor training memory.
    for _ in range(warmup):
        step()
    times: list[float] = []
    while len(times) < steps and (budget is None or not times or sum(times) < budget):
        start = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - start)

    # Memory, measured after the timing so that it cannot slow it down.
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        step()
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev) - base
        memory_kind = "cuda max_memory_allocated"
    else:
        _return_freed_memory_to_the_os()
        step()  # settle into the new allocation pattern
        base = _rss_kib("VmRSS") * 1024
        resettable = _reset_peak_rss()
        step()
        peak = _rss_kib("VmHWM") * 1024 - base
        memory_kind = "peak RSS" if resettable else "peak RSS (not resettable: upper bound)"
    median = float(np.median(times))
    return {
        "model": config.model,
        "batch_size": batch_size,
        "steps": len(times),
        "step_seconds_median": median,
        "seconds_per_sample": median / batch_size,
        "peak_bytes": int(peak),
        "peak_bytes_per_sample": peak / batch_size,
        "memory_measure": memory_kind,
        "parameters": sum(p.numel() for p in trainer.params),
        "device": str(dev),
        "threads": torch.get_num_threads(),
    }


def _run_isolated(request: dict[str, Any], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "ats.bench.train", json.dumps(request)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"model": request["config"]["model"], "error": f"timed out after {timeout:.0f} s"}
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        reason = "killed (out of memory?)" if proc.returncode in (-9, 137) else " | ".join(tail)
        return {"model": request["config"]["model"], "error": reason or f"exit {proc.returncode}"}
    return json.loads(lines[-1])


def _machine() -> str:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


@click.command(name="train")
@click.option("--task", "task_name", required=True, help="Task whose input sizes and networks to use.")
@click.option("--model", "models", multiple=True, default=DEFAULT_MODELS, show_default=True,
              help="Models to measure (repeatable).")
@click.option("--preset", default=None, help="A task preset (default: the paper's setting).")
@click.option("--batch-size", type=int, default=16, show_default=True,
              help="Batch size for every model but the full-resolution CNN.")
@click.option("--full-batch-size", type=int, default=2, show_default=True,
              help="Batch size for the full-resolution CNN (it needs far more memory).")
@click.option("--steps", type=int, default=5, show_default=True, help="Timed steps (median).")
@click.option("--warmup", type=int, default=1, show_default=True, help="Untimed steps first.")
@click.option("--device", default="auto", show_default=True)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any run setting.")
@click.option("--real-data", is_flag=True, help="Use the task's data set instead of random inputs.")
@click.option("--budget", type=float, default=120, show_default=True,
              help="Seconds of timed steps per model at most (at least one step is timed).")
@click.option("--timeout", type=float, default=900, show_default=True,
              help="Seconds allowed per model in all (its process is stopped after that).")
@click.option("--json", "json_path", default=None, help="Write the results as JSON to a file, or '-'.")
def train_command(task_name, models, preset, batch_size, full_batch_size, steps, warmup, device,
                  sets, real_data, budget, timeout, json_path) -> None:
    """Training time and peak memory per sample of ATS, DPS, IPS and the CNN baselines.

    Each model's row is printed as soon as it is measured; Ctrl-C keeps (and
    writes to --json) the rows measured so far.
    """
    from ats.task import configure

    for name, value in (("batch-size", batch_size), ("full-batch-size", full_batch_size),
                        ("steps", steps), ("budget", budget)):
        if value <= 0:
            raise click.BadParameter(f"must be positive, got {value}", param_hint=f"--{name}")
    try:
        task, config = configure(task_name, preset=preset, sets=sets)
        for model in models:
            if model not in task.models:
                raise ValueError(f"unknown model {model!r} for task {task_name!r}; models: "
                                 f"{', '.join(task.models)}")
        low, high = task.input_shapes(config)
    except (ValueError, KeyError) as exc:
        raise click.ClickException(str(exc)) from None
    machine = _machine()
    click.echo(f"ats-bench train --task {task_name}: x_low {low}, x_high {high}; "
               f"{'real' if real_data else 'synthetic'} inputs", err=True)
    click.echo(f"machine: {machine}", err=True)
    # every model with its own options' defaults (config.method belongs to one model)
    base = {k: v for k, v in config.to_dict().items()
            if k not in ("task", "data", "preset", "method")}
    base.update({f"data.{k}": v for k, v in config.data.items()})
    # ATS first: the other rows are compared with it as they come.
    order = sorted(dict.fromkeys(models), key=lambda m: m != "ats")
    table = _Table()
    results: list[dict[str, Any]] = []
    interrupted = False
    try:
        for model in order:
            b = full_batch_size if model == "cnn_full" else batch_size
            click.echo(f"measuring {model} (batch {b}, {warmup} + up to {steps} steps, "
                       f"{budget:g} s) ...", err=True)
            request = {"task": task_name, "config": {**base, "model": model}, "batch_size": b,
                       "steps": steps, "warmup": warmup, "device": device,
                       "real_data": real_data, "budget": budget}
            results.append(_run_isolated(request, timeout))
            table.add(results[-1], next((r for r in results if r.get("model") == "ats"
                                         and "error" not in r), None))
    except KeyboardInterrupt:
        interrupted = True
        click.echo(f"interrupted: {len(results)} of {len(order)} models measured", err=True)
    payload = {"task": task_name, "machine": machine, "x_low": low, "x_high": high,
               "synthetic": not real_data, "complete": not interrupted, "results": results}
    if json_path == "-":
        click.echo(json.dumps(payload, indent=2))
    elif json_path:
        with open(json_path, "w") as f:
            json.dump(payload, f, indent=2)
    if interrupted:
        raise SystemExit(130)


class _Table:
    """The results table, printed a row at a time."""

    HEADER = ("model", "batch", "steps", "ms/step", "ms/sample", "peak MiB/sample",
              "time vs ATS", "memory vs ATS")
    WIDTHS = (10, 5, 5, 10, 10, 15, 11, 13)

    def __init__(self) -> None:
        self._echo(self.HEADER)

    def _echo(self, cells) -> None:
        click.echo("  ".join(str(c).rjust(w) for c, w in zip(cells, self.WIDTHS)))

    def add(self, r: dict[str, Any], ats: dict[str, Any] | None) -> None:
        if "error" in r:
            self._echo((r["model"], "-", "-", "-", "-", "-", "failed: " + r["error"], ""))
            return
        t_ratio = r["seconds_per_sample"] / ats["seconds_per_sample"] if ats else float("nan")
        m_ratio = (r["peak_bytes_per_sample"] / ats["peak_bytes_per_sample"]
                   if ats and ats["peak_bytes_per_sample"] > 0 else float("nan"))
        r["time_ratio_vs_ats"], r["memory_ratio_vs_ats"] = t_ratio, m_ratio
        self._echo((r["model"], r["batch_size"], r["steps"], f"{1e3 * r['step_seconds_median']:,.1f}",
                    f"{1e3 * r['seconds_per_sample']:,.2f}", _mib(r["peak_bytes_per_sample"]),
                    f"{t_ratio:,.1f}x", f"{m_ratio:,.1f}x"))


def _worker_main(argv: list[str]) -> None:
    request = json.loads(argv[0])
    result = measure(request["task"], request["config"], batch_size=request["batch_size"],
                     steps=request["steps"], warmup=request["warmup"], device=request["device"],
                     real_data=request["real_data"], budget=request.get("budget"))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
