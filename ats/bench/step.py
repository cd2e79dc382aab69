"""``ats-bench step``: where the time of a training step on image files goes.

Runs the engine's own ``Trainer.train_step`` on batches of the ``images``
task (``--data-dir``) and splits each step into

* ``low views``: loading the batch: the items' low views (and collating);
* ``attention``: the attention network's forward pass;
* ``reading patches``: the patches read from the files (tiles decoded);
* ``feature network``: its forward pass on the B·N patches;
* ``rest of forward``: softmax, sampling, geometry, estimator, classifier;
* ``backward + step``: the loss's backward pass, clipping and the optimiser.

The networks are timed by forward hooks, the reading by wrapping the
model's ``read_sources``. The same batches are run twice: with an empty
low-view cache (a first epoch) and again (a second epoch: low views cached
on disk, tiles possibly in the decoded-tile cache).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import click

__all__ = ["PHASES", "run_step_benchmark", "step_command"]

PHASES = ("low views", "attention", "reading patches", "feature network", "rest of forward",
          "backward + step", "step")


class _Clock:
    """Seconds spent in timed parts of the current step."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)
        self._started: dict[str, float] = {}

    def hooks(self, module: Any, name: str) -> None:
        module.register_forward_pre_hook(lambda *a: self._start(name))
        module.register_forward_hook(lambda *a: self._stop(name))

    def wrap(self, fn: Callable, name: str) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._start(name)
            try:
                return fn(*args, **kwargs)
            finally:
                self._stop(name)
        return timed

    def _start(self, name: str) -> None:
        self._started[name] = time.perf_counter()

    def _stop(self, name: str) -> None:
        self.spent[name] += time.perf_counter() - self._started.pop(name)


def run_step_benchmark(data_dir: str, *, steps: int = 5, sets: tuple[str, ...] = (),
                       options: dict[str, Any] | None = None,
                       log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Time ``steps`` training steps twice (first epoch, then cached)."""
    import torch

    from ats.task import configure
    from ats.train.data import EpochSampler, make_loader
    from ats.train.engine import Trainer

    with tempfile.TemporaryDirectory(prefix="ats-lowviews-") as cache_dir:
        task, config = configure("images", options={"data_dir": data_dir, "output": None,
                                                     "workers": 0, **(options or {})},
                                 sets=(*sets, f"data.cache_dir={cache_dir}"))
        log(f"checking the files of {data_dir}")
        trainer = Trainer(config, task=task, progress=False, log=lambda m: None)
        clock = _Clock()
        ats = trainer.classifier.ats
        clock.hooks(ats.attention, "attention")
        clock.hooks(ats.feature, "feature network")
        clock.hooks(trainer.classifier, "forward")
        ats.read_sources = clock.wrap(ats.read_sources, "reading patches")
        sampler = EpochSampler(len(trainer.train_set), shuffle=False, seed=0)
        passes = {}
        for label in ("first epoch", "second epoch"):
            loader = iter(make_loader(trainer.train_set, sampler, batch_size=config.batch_size,
                                      workers=0, pin_memory=False))
            rows: dict[str, list[float]] = defaultdict(list)
            for step in range(min(steps, len(sampler) // config.batch_size or 1)):
                log(f"{label}: step {step + 1}")
                clock.spent.clear()
                began = time.perf_counter()
                batch = next(loader)
                loaded = time.perf_counter()
                trainer.train_step(batch)
                ended = time.perf_counter()
                s = clock.spent
                rows["low views"].append(loaded - began)
                for name in ("attention", "reading patches", "feature network"):
                    rows[name].append(s[name])
                rows["rest of forward"].append(s["forward"] - s["attention"]
                                               - s["reading patches"] - s["feature network"])
                rows["backward + step"].append(ended - loaded - s["forward"])
                rows["step"].append(ended - began)
            passes[label] = {k: {"median_s": statistics.median(v), "seconds": v}
                             for k, v in rows.items()}
    return {"config": {k: config.to_dict()[k] for k in ("batch_size", "n_patches", "patch_size")}
            | {"data": config.data}, "threads": torch.get_num_threads(), "passes": passes}


def format_report(r: dict[str, Any]) -> str:
    c = r["config"]
    lines = [f"batch {c['batch_size']}, N={c['n_patches']}, patch {c['patch_size']}, "
             f"low view {c['data'].get('low_size')}; {r['threads']} threads; medians (ms)",
             f"{'phase':<18}" + "".join(f"{p:>15}" for p in r["passes"])]
    for phase in PHASES:
        cells = "".join(f"{1e3 * r['passes'][p][phase]['median_s']:15.1f}" for p in r["passes"])
        lines.append(f"{phase:<18}{cells}")
    return "\n".join(lines)


@click.command(name="step")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="An images data set (labels.csv or class folders).")
@click.option("--steps", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", type=int, default=None)
@click.option("--n-patches", type=int, default=None)
@click.option("--patch-size", type=int, default=None)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any run setting.")
@click.option("--json", "json_path", default=None, metavar="PATH", help="Also write JSON here.")
def step_command(data_dir, steps, batch_size, n_patches, patch_size, sets, json_path) -> None:
    """Split a training step on image files into low views, attention, reading
    patches, feature network and backward; first epoch and cached."""
    options = {k: v for k, v in (("batch_size", batch_size), ("n_patches", n_patches),
                                 ("patch_size", patch_size)) if v is not None}
    try:
        results = run_step_benchmark(data_dir, steps=steps, sets=sets, options=options,
                                     log=lambda m: click.echo(m, err=True))
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_report(results))
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2))
