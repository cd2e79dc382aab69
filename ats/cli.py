"""Command-line entry points: ``ats-run``, ``ats-compare``, ``ats-bench``,
``ats-make`` and ``ats-plugins``.

Thin wrappers: every command builds its parts from the registries and hands
over to library code, so everything here is also usable from Python.
"""

from __future__ import annotations

import inspect
import os
import re

import click

from ats import registry as reg

__all__ = ["run_main", "compare_main", "bench_main", "plugins_main", "make_main"]

def _summary(obj: object) -> str:
    """The first sentence of ``obj``'s own docstring (not one it inherits,
    such as ``nn.Module``'s), on one line."""
    own = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    paragraph = (inspect.cleandoc(own) if isinstance(own, str) else "").strip().split("\n\n")[0]
    text = " ".join(paragraph.split())
    # the first sentence: a period followed by a capital ("i.i.d. draws" is not an end)
    match = re.search(r"\.\s+(?=[A-Z])", text)
    text = text[: match.start() + 1] if match else text
    return text if len(text) <= 90 else text[:87] + "..."


@click.command(name="ats-plugins")
@click.argument("kinds", nargs=-1, type=click.Choice(sorted(reg.REGISTRIES)))
@click.option("--pattern", default=None, help="Only names matching this glob, e.g. 'with*'.")
def plugins_main(kinds: tuple[str, ...], pattern: str | None) -> None:
    """List the registered plugins of every kind (or of KINDS)."""
    for kind in kinds or tuple(reg.REGISTRIES):
        registry = reg.REGISTRIES[kind]
        names = registry.names(pattern)
        click.secho(f"{kind} ({len(names)})", bold=True)
        for name in names:
            obj = registry.get(name)
            origin = getattr(obj, "__module__", "?")
            line = f"  {name:<24} {origin}"
            summary = _summary(obj)
            if summary:
                line += f"  {summary}"
            click.echo(line)


def _patch_size(ctx: click.Context, param: click.Parameter, value: str | None):
    """``--patch-size 50`` or ``32x48``, parsed like the configuration's field."""
    if value is None:
        return None
    from ats.config import RunConfig, field_types, parse_value

    try:
        return parse_value("patch_size", value, field_types(RunConfig)["patch_size"])
    except ValueError:
        raise click.BadParameter(f"expected an int or ints like 50 or 32x48, got {value!r}")


@click.command(name="ats-run", context_settings={"max_content_width": 100})
@click.option("--task", "task_name", default=None,
              help="Task to run (see `ats-plugins task`); with --resume, the run's own by default.")
@click.option("--model", default=None,
              help="ats (default), dps, ips, cnn_low or cnn_full (`ats-plugins model`); "
                   "their options: --set method.NAME=VALUE.")
@click.option("--preset", default=None, help="A named preset of the task, e.g. paper, easy, smoke.")
@click.option("--epochs", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--n-patches", type=int, default=None, help="N, patches per image.")
@click.option("--patch-size", default=None, callback=_patch_size,
              help="Patch size in full-resolution pixels: 50 or 32x48.")
@click.option("--sampler", default=None, help="with_replacement or without_replacement.")
@click.option("--extractor", default=None, help="Patch extraction backend (auto, numba, torch, ...).")
@click.option("--device", default=None, help="auto (default), cpu, cuda, cuda:1, ...")
@click.option("--seed", type=int, default=None)
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Where the task's data files are.")
@click.option("--output", default=None, type=click.Path(file_okay=False),
              help="Run directory (default runs/TASK-MODEL-TIME); with --resume, the run to continue.")
@click.option("--workers", type=int, default=None, help="DataLoader worker processes.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Any other setting, e.g. --set lr=3e-4 --set data.noise=false (repeatable).")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Import MODULE first, e.g. one that registers a network (repeatable; "
                   "also $ATS_PLUGINS, comma-separated).")
@click.option("--resume", is_flag=True, help="Continue the run in --output from its checkpoint.")
@click.option("--cross-validate", is_flag=True,
              help="Train every fold of a k-fold task (e.g. colon_cancer) and report mean and std.")
@click.option("--no-progress", is_flag=True, help="No progress bars (logs only).")
@click.option("--print-config", is_flag=True,
              help="Check the settings and that the model builds, print the configuration and "
                   "exit; nothing is trained or written.")
def run_main(task_name, preset, sets, plugins, resume, cross_validate, no_progress, print_config,
             **options):
    """Train and evaluate a model on a task, e.g. `ats-run --task mega_mnist`.

    Writes config.json, metrics.csv, checkpoint.pt (every epoch, atomically),
    pictures/ (attention overlays and patches), curves.png and summary.json
    into the run directory.
    """
    import json
    import time
    from pathlib import Path

    from ats.task import configure, configure_resume
    from ats.train.devices import leave_distributed
    from ats.train.engine import Trainer
    from ats.train.lock import RunDirectoryInUse

    if resume and cross_validate:
        raise click.UsageError("--cross-validate continues unfinished folds by itself; drop --resume")
    if resume and options.get("output") is None:
        raise click.UsageError("--resume needs --output, the run directory to continue")
    if task_name is None and not resume:
        raise click.UsageError("Missing option '--task' (see `ats-plugins task`)")
    try:
        reg.load_plugins(plugins)
        if resume:
            output = options.pop("output")
            task, config = configure_resume(task_name, output, preset=preset, options=options,
                                            sets=sets)
        else:
            task, config = configure(task_name, preset=preset, options=options, sets=sets)
            if config.output is None:
                stamp = time.strftime("%Y%m%d-%H%M%S")
                config = task.override(
                    config, {"output": str(Path("runs") / f"{config.task}-{config.model}-{stamp}")})
        main_rank = int(os.environ.get("RANK", 0)) == 0  # under torchrun, rank 0 speaks
        if print_config:
            task.build_model(config)  # every plugin name resolves and keeps its contract
            click.echo(config.to_json())
            return
        if main_rank:
            click.echo("configuration:\n" + config.to_json(), err=True)
        if cross_validate:
            from ats.train.crossval import cross_validate as run_folds

            summary = run_folds(config, task, progress=not no_progress)
        else:
            trainer = Trainer(config, task=task, progress=not no_progress)
            summary = trainer.fit(resume=resume)
        leave_distributed(wait_for_others=True)
    except KeyboardInterrupt:
        # the engine has said where the run stopped and how to continue it
        click.echo("stopped", err=True)
        raise SystemExit(130)
    except (ValueError, KeyError, OSError, RunDirectoryInUse) as exc:
        raise click.ClickException(_error_message(exc)) from None
    finally:
        leave_distributed(wait_for_others=False)  # after an error; a no-op once left
    if main_rank:
        click.echo(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))


@click.command(name="ats-compare", context_settings={"max_content_width": 100})
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...",
                type=click.Path(file_okay=True))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Where curves.png, selections.png and compare.md are written.")
@click.option("--images", type=click.IntRange(min=1), default=4, show_default=True,
              help="The first this many test images are drawn.")
@click.option("--label", "labels", multiple=True, metavar="NAME",
              help="One per run, in order (default: 'model (directory name)').")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of every model's sampling generator.")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Where the task's data files are (default: each run's own).")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Import MODULE first, e.g. one that registers a network the runs use.")
def compare_main(run_dirs, out, images, labels, seed, data_dir, device, plugins):
    """Compare runs of one task side by side, e.g. ATS, DPS and IPS:
    `ats-compare runs/ats runs/dps runs/ips --out cmp`.

    Writes into --out: curves.png (test error and attention entropy by epoch,
    one line per run), selections.png (the first test images, one column per
    run, with the patches its latest checkpoint reads outlined) and
    compare.md (final and best test error, seconds per epoch). Runs still
    training are read as they stand.
    """
    from ats.compare import compare_runs

    try:
        reg.load_plugins(plugins)
        written = compare_runs(run_dirs, out, images=images, labels=labels or None, seed=seed,
                               data_dir=data_dir, device=device,
                               log=lambda message: click.echo(message, err=True))
    except (ValueError, KeyError, OSError) as exc:  # CheckpointError is a ValueError
        raise click.ClickException(_error_message(exc)) from None
    for path in written.values():
        click.echo(str(path))


def _error_message(exc: BaseException) -> str:
    """One line for a user: ours as written, the system's as 'reason: path'."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        text = exc.strerror if str(exc.filename) in exc.strerror else \
            f"{exc.strerror}: {exc.filename}"
        return text + (f" -> {exc.filename2}" if exc.filename2 else "")
    return str(exc)


class _LazyGroup(click.Group):
    """A group whose subcommands are imported only when used (fast --help,
    and a benchmark's heavy imports stay out of the other commands)."""

    def __init__(self, *args, lazy: dict[str, str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            import importlib

            module, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(name="ats-bench", cls=_LazyGroup, lazy={
    "convs": "ats.bench.convs:convs_command",
    "extract": "ats.bench.extract:extract_command",
    "train": "ats.bench.train:train_command",
    "sources": "ats.bench.sources:sources_command",
    "step": "ats.bench.step:step_command",
})
def bench_main() -> None:
    """Benchmarks: extraction backends, image sources and training cost per sample."""


@click.group(name="ats-make", cls=_LazyGroup, lazy={
    "mega_mnist": "ats.make.mega_mnist:mega_mnist_command",
})
def make_main() -> None:
    """Write data sets as image files, tile by tile (e.g. gigapixel Megapixel MNIST)."""


if __name__ == "__main__":  # pragma: no cover
    plugins_main()
