"""The training and evaluation loop.

One :class:`Trainer` per run: it builds the task's data and model from a
:class:`RunConfig`, trains with progress bars, evaluates over several
sampling seeds, writes metrics, pictures and an atomic checkpoint every
epoch, and resumes exactly. :meth:`Trainer.train_step` is the one training
step, also the one ``ats-bench train`` times.

Runs in one process, or under ``torchrun`` with DistributedDataParallel
(:mod:`ats.train.devices`): each rank trains on its own shard with its own
seeds, evaluation sums errors over ranks, and only rank 0 writes files.
(Train metrics are rank 0's shard.) See docs/training.md.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ats.classifier import Classifier, ModelOutput
from ats.config import RunConfig, resumed_config
from ats.contracts import set_epoch
from ats.core.regularizers import attention_entropy
from ats.task import Task, get_task
from ats.train import rng
from ats.train.checkpoint import (
    atomic_write_text,
    load_latest_checkpoint,
    save_checkpoint,
)
from ats.train.data import EpochSampler, make_loader
from ats.train.devices import (
    all_gather_objects,
    all_reduce_sum,
    init_distributed,
    memory_format,
    rank_and_world_size,
    resolve_device,
)
from ats.train.evaluation import evaluate_model, forward_batch, time_forward
from ats.train.lock import RunLock
from ats.train.loss import training_loss
from ats.train.metrics import MetricsLog, format_record, summarize
from ats.train.pictures import save_curves_figure, save_model_pictures
from ats.train.progress import EpochProgress, run_estimate
from ats.train.stopping import StopRequest

__all__ = ["StepResult", "Trainer"]

CHECKPOINT = "checkpoint.pt"
SUMMARY = MetricsLog.SUMMARY
CONFIG = "config.json"


@dataclass
class StepResult:
    """What one training step measured on its batch."""

    loss: float  #: the training loss (task loss + regularisers), batch mean
    errors: int  #: misclassified items
    count: int  #: items in the batch
    entropy: float | None  #: sum over items of the attention entropy (None: no attention)


class Trainer:
    """Train and evaluate one model of one task.

    Args:
        config: the resolved configuration.
        task: the task (default: built from ``config.task``).
        datasets: (train, test), instead of ``task.datasets(config)``.
        log: where messages go (default: ``tqdm.write`` to stderr).
        progress: show progress bars.
    """

    def __init__(self, config: RunConfig, *, task: Task | None = None,
                 datasets: tuple[Dataset, Dataset] | None = None,
                 log: Callable[[str], None] | None = None, progress: bool = True) -> None:
        self.config = config
        self.task = task if task is not None else get_task(config.task)
        self.task.check_config(config)
        self.progress = progress
        self.rank, self.world_size = rank_and_world_size()
        self._log = log or _default_log
        self.device = init_distributed(resolve_device(config.device), self.world_size)
        self.output = Path(config.output) if config.output else None

        rng.seed_everything(config.seed + self.rank)
        self.train_set, self.test_set = datasets if datasets is not None else \
            self.task.datasets(config)
        if len(self.train_set) == 0 or len(self.test_set) == 0:
            raise ValueError(
                f"task {config.task!r} produced an empty data set (train {len(self.train_set)}, "
                f"test {len(self.test_set)} items)"
            )
        self.classifier: Classifier = self.task.build_model(config).to(
            self.device, memory_format=memory_format(config.memory_format, self.device))
        self.classifier.check_input_shapes(*self.task.input_shapes(config))
        self.model: torch.nn.Module = self.classifier
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.classifier, device_ids=ids)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = self._build_optimizer()
        self.objective = self.task.objective(config)  # the loss and error of its labels
        weights = self.task.class_weights(self.train_set) if config.class_weights else None
        self.class_weights = weights.to(self.device) if weights is not None else None
        self.train_sampler = EpochSampler(len(self.train_set), shuffle=True, seed=config.seed,
                                          rank=self.rank, world_size=self.world_size)
        self.generator = torch.Generator(device=self.device).manual_seed(
            config.seed * 7919 + self.rank)
        self.history: list[dict[str, Any]] = []
        self.epoch = 0  # epochs completed
        # the epoch in progress, from its last step boundary: {"epoch", "step", "totals"}
        self.partial: dict[str, Any] | None = None
        self.metrics = MetricsLog(None)
        self.stop = StopRequest()
        self._last_save = time.monotonic()

    # -- setup -------------------------------------------------------------------
    def _build_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        if c.optimizer == "adam":
            return torch.optim.Adam(self.params, lr=c.lr, eps=c.adam_eps,
                                    weight_decay=c.weight_decay)
        return torch.optim.SGD(self.params, lr=c.lr, momentum=c.momentum,
                               weight_decay=c.weight_decay)

    def _loader(self, dataset: Dataset, sampler: Sampler, seed: int = 0) -> DataLoader:
        return make_loader(dataset, sampler, batch_size=self.config.batch_size,
                           workers=self.config.workers, pin_memory=self.device.type == "cuda",
                           seed=seed)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def log(self, message: str) -> None:
        if self.is_main:
            self._log(message)

    # -- the loop ----------------------------------------------------------------
    def fit(self, *, resume: bool = False) -> dict[str, Any]:
        """Train for ``config.epochs`` epochs (continuing the checkpoint in
        ``config.output`` when ``resume``); returns the summary (also written
        to summary.json).

        Raises:
            RunDirectoryInUse: another process is training in ``config.output``.
            FileExistsError: ``config.output`` holds a run and ``resume`` is False.
            KeyboardInterrupt: Ctrl-C or SIGTERM; the run is saved at the step
                it reached (:mod:`ats.train.stopping`).
        """
        lock = RunLock(self.output) if self.output is not None and self.is_main else None
        if lock is not None:
            lock.acquire()  # before looking for a checkpoint: no two processes get past here
        try:
            return self._fit(resume)
        finally:
            if lock is not None:
                lock.release()

    def _fit(self, resume: bool) -> dict[str, Any]:
        if resume:
            self.load(self._path(CHECKPOINT))
        elif self.output is not None and (self.output / CHECKPOINT).exists():
            raise FileExistsError(
                f"{self.output} already holds a run ({CHECKPOINT}); pass --resume to continue "
                "it or choose another --output"
            )
        self._prepare_output()
        if not resume:
            self.save()  # epoch 0: a Ctrl-C during the first epoch is resumable too
        self.log(f"training {self.config.model} on {self.config.task}: "
                 f"{len(self.train_set)} train / {len(self.test_set)} test items, "
                 f"device {self.device}, output {self.output}")
        start = time.time()
        try:
            with self.stop:
                while self.epoch < self.config.epochs:
                    record = self._run_epoch(self.epoch + 1)
                    self.epoch += 1
                    self.partial = None
                    self.history.append(record)
                    self.save()
                    if self.is_main:
                        self.metrics.add_epoch(self.history)
                    self.log(format_record(record))
        except KeyboardInterrupt:
            at = (f"epoch {self.partial['epoch']}, step {self.partial['step']}"
                  if self.partial else f"the end of epoch {self.epoch}")
            self.log(f"stopped; the checkpoint of {at} is intact: continue with --resume "
                     f"--output {self.output}")
            raise
        finally:
            self.metrics.close()
        summary = self._summary(time.time() - start)
        if self.output is not None and self.is_main:
            self.metrics.write_summary(summary)
            save_curves_figure(self.output / "curves.png", self.history)
        return summary

    def _run_epoch(self, epoch: int) -> dict[str, Any]:
        lr = self._set_lr(epoch)
        train = self.train_epoch(epoch)
        record: dict[str, Any] = {"epoch": epoch, "lr": lr, **train}
        if epoch % self.config.eval_every == 0 or epoch == self.config.epochs:
            record.update(self.evaluate())
            if self.config.eval_topk and self.classifier.stochastic:
                record["test_error_topk"] = self.evaluate(deterministic=True)["test_error"]
            if self.output is not None and self.is_main and self.config.pictures > 0:
                self.save_pictures(epoch)
        return record

    def _set_lr(self, epoch: int) -> float:
        c = self.config
        drops = sum(1 for e in c.lr_decay_at if epoch > e)  # drop *from* epoch e + 1
        lr = c.lr * c.lr_decay ** drops
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _forward(self, batch: dict[str, Any], *, deterministic: bool = False
                 ) -> tuple[ModelOutput, torch.Tensor]:
        return forward_batch(self.model, batch, self.device, self.generator,
                             deterministic=deterministic)

    def loss(self, out: ModelOutput, y: torch.Tensor) -> torch.Tensor:
        """The training loss of ``out`` (:func:`ats.train.loss.training_loss`)."""
        return training_loss(out, y, objective=self.objective, config=self.config,
                             model=self.model, class_weights=self.class_weights)

    def train_step(self, batch: dict[str, Any]) -> StepResult:
        """One optimisation step on ``batch`` (forward, loss, backward, clip, step).

        Raises:
            FloatingPointError: the loss is not finite (nothing is updated).
        """
        self.model.train()
        out, y = self._forward(batch)
        loss = self.loss(out, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss.item()}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.clip_norm)
        self.optimizer.step()
        entropy = None
        if out.ats is not None:
            entropy = float(attention_entropy(out.ats.attention.detach()).sum())
        return StepResult(loss.item(), int(self.objective.wrong(out.logits, y).sum()),
                          y.shape[0], entropy)

    def train_epoch(self, epoch: int) -> dict[str, float | None]:
        """One pass over the training set (from the step :attr:`partial` reached,
        when resuming within the epoch); returns its metrics."""
        c = self.config
        resumed = self.partial if self.partial and self.partial["epoch"] == epoch else None
        first = resumed["step"] if resumed else 0
        totals = dict(resumed["totals"]) if resumed else {
            "loss": 0.0, "errors": 0, "entropy": 0.0, "count": 0, "seconds": 0.0,
            "has_entropy": False}
        self.train_sampler.set_epoch(epoch, skip=first * c.batch_size)
        set_epoch(self.train_set, epoch)
        set_epoch(self.classifier, epoch)  # e.g. DPS's σ schedule
        loader = self._loader(self.train_set, self.train_sampler,
                              seed=(c.seed * 1_000_003 + epoch) * 100_003 + first)
        steps = first + len(loader)
        steps = steps if c.max_steps is None else min(steps, c.max_steps)
        bar = EpochProgress(steps, first, f"epoch {epoch}/{c.epochs}",
                            enabled=self.progress and self.is_main)
        step_seconds: list[float] = []
        start = time.time() - totals["seconds"]
        try:
            for step, batch in enumerate(loader, start=first):
                if step >= steps:
                    break
                began = time.perf_counter()
                try:
                    result = self.train_step(batch)
                except FloatingPointError as exc:
                    raise FloatingPointError(
                        f"{exc} at epoch {epoch}, step {step}; lower lr or raise smoothing (the "
                        "last good checkpoint is intact)"
                    ) from None
                step_seconds.append(time.perf_counter() - began)
                totals["count"] += result.count
                totals["loss"] += result.loss * result.count
                totals["errors"] += result.errors
                if result.entropy is not None:
                    totals["has_entropy"] = True
                    totals["entropy"] += result.entropy
                totals["seconds"] = time.time() - start
                self.partial = {"epoch": epoch, "step": step + 1, "totals": dict(totals)}
                bar.update(totals, totals["count"] / max(totals["seconds"], 1e-9))
                self._checkpoint_within_epoch()
                if epoch == 1 and first == 0 and len(step_seconds) == min(5, steps) and steps > 5:
                    run_estimate(step_seconds, steps_per_epoch=steps,
                                 epochs_left=c.epochs - self.epoch,
                                 eval_seconds=self._evaluation_seconds(),
                                 eval_every=c.eval_every, log=self.log)
        finally:
            bar.close()
        count = max(totals["count"], 1)
        return {
            "train_loss": totals["loss"] / count,
            "train_error": totals["errors"] / count,
            "train_entropy": totals["entropy"] / count if totals["has_entropy"] else None,
            "epoch_seconds": totals["seconds"],
            "samples_per_second": totals["count"] / max(totals["seconds"], 1e-9),
        }

    def _checkpoint_within_epoch(self) -> None:
        """Save at this step boundary when ``checkpoint_every`` seconds have
        passed or a stop was asked for (then stop). All ranks agree."""
        every = self.config.checkpoint_every
        due = every is not None and time.monotonic() - self._last_save >= every
        stop = self.stop.requested is not None
        if self.world_size > 1:
            due, stop = (bool(v) for v in all_reduce_sum(self.device, float(due), float(stop)))
        if due or stop:
            self.save()
        if stop:
            raise KeyboardInterrupt(self.stop.requested or "stop")

    def _evaluation_seconds(self) -> float:
        """One evaluation's time, from one timed forward pass on a test batch
        (the sampling generator is left as it was)."""
        c = self.config
        batch = torch.utils.data.default_collate(
            [self.test_set[i] for i in range(min(c.batch_size, len(self.test_set)))])
        state = self.generator.get_state()
        per_item = time_forward(self.model, batch, self.device, self.generator)
        self.generator.set_state(state)
        stochastic = self.classifier.stochastic
        passes = (c.eval_seeds if stochastic else 1) + (1 if c.eval_topk and stochastic else 0)
        return per_item * passes * len(self.test_set) / self.world_size

    def evaluate(self, *, deterministic: bool = False) -> dict[str, float]:
        """Test error as mean and std over ``eval_seeds`` sampling seeds; one
        pass for deterministic models and top-N inference. A stop request
        ends it at once (there is nothing to save mid-evaluation)."""
        stochastic = self.classifier.stochastic and not deterministic
        loader = self._loader(self.test_set, EpochSampler(len(self.test_set), shuffle=False,
                                                          seed=0, rank=self.rank,
                                                          world_size=self.world_size))
        return evaluate_model(self.model, loader, device=self.device, generator=self.generator,
                              seeds=range(self.config.eval_seeds if stochastic else 1),
                              objective=self.objective,
                              deterministic=deterministic, before_batch=self.stop.check)

    def save_pictures(self, epoch: int) -> None:
        """Attention overlays and patches of the first ``pictures`` test items."""
        save_model_pictures(self.classifier, self.test_set, self._path("pictures"), epoch,
                            count=self.config.pictures, device=self.device,
                            objective=self.objective)

    # -- checkpoints and logs ----------------------------------------------------
    def _path(self, name: str) -> Path:
        if self.output is None:
            raise ValueError("this run has no output directory (config.output is None)")
        return self.output / name

    def _prepare_output(self) -> None:
        if self.output is None or not self.is_main:
            return
        self.output.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.output / CONFIG, self.config.to_json() + "\n")
        self.metrics = MetricsLog(self.output)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs; call on every rank (the random states
        of all ranks are gathered)."""
        return {
            "epoch": self.epoch,
            "config": self.config.to_dict(),
            "model": self.classifier.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
            "partial": self.partial,
            "rng": all_gather_objects(rng.capture(self.generator)),
        }

    def save(self) -> None:
        """Write the checkpoint atomically (rank 0 writes; every rank must call)."""
        if self.output is None:
            return
        state = self.state_dict()
        if self.is_main:
            save_checkpoint(self.output / CHECKPOINT, state)
        self._last_save = time.monotonic()

    def load(self, path: str | Path) -> None:
        """Continue from a checkpoint: model, optimiser, random states, epoch.

        Raises:
            ValueError: the checkpoint is of another task or model, or its
                configuration differs in a setting that may not change on
                resume (:data:`ats.config.RESUMABLE`).
        """
        state, path = load_latest_checkpoint(path, map_location="cpu")
        saved = RunConfig.from_dict(state.get("config", {}))
        for key in ("task", "model"):
            if getattr(saved, key) != getattr(self.config, key):
                raise ValueError(
                    f"the checkpoint {path} is for {key}={getattr(saved, key)!r}, not "
                    f"{getattr(self.config, key)!r}"
                )
        current = self.config.to_dict()
        resumed_config(saved, {k: v for k, v in current.items() if saved.to_dict()[k] != v})
        self.classifier.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.partial = state.get("partial")
        streams = rng.select_rank(state["rng"], self.rank, self.world_size)
        if streams is not None:
            rng.restore(streams, self.generator)
        where = (f"epoch {self.partial['epoch']}, step {self.partial['step']}" if self.partial
                 else f"the end of epoch {self.epoch}")
        self.log(f"resumed from {path} at {where}")

    def _summary(self, seconds: float) -> dict[str, Any]:
        return {
            "task": self.config.task,
            "model": self.config.model,
            **summarize(self.history),
            "seconds_this_session": seconds,
            "device": str(self.device),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "config": self.config.to_dict(),
        }


def _default_log(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)
