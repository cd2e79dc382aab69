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

import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from ats.classifier import Classifier, ModelOutput
from ats.config import RunConfig, resumed_config
from ats.contracts import regularization_terms, set_epoch
from ats.core.regularizers import attention_entropy, entropy_regularizer
from ats.task import Task, get_task
from ats.train import rng
from ats.train.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from ats.train.data import EpochSampler, make_loader
from ats.train.devices import (
    all_gather_objects,
    all_reduce_sum,
    init_distributed,
    rank_and_world_size,
    resolve_device,
    unwrap,
)
from ats.train.metrics import MetricsLog, format_duration, format_record, summarize
from ats.train.pictures import save_curves_figure, save_model_pictures

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
        self.classifier: Classifier = self.task.build_model(config).to(self.device)
        self.classifier.check_input_shapes(*self.task.input_shapes(config))
        self.model: torch.nn.Module = self.classifier
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.classifier, device_ids=ids)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = self._build_optimizer()
        weights = self.task.class_weights(self.train_set) if config.class_weights else None
        self.class_weights = weights.to(self.device) if weights is not None else None
        self.train_sampler = EpochSampler(len(self.train_set), shuffle=True, seed=config.seed,
                                          rank=self.rank, world_size=self.world_size)
        self.generator = torch.Generator(device=self.device).manual_seed(
            config.seed * 7919 + self.rank)
        self.history: list[dict[str, Any]] = []
        self.epoch = 0  # epochs completed
        self.metrics = MetricsLog(None)

    # -- setup -------------------------------------------------------------------
    def _build_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        if c.optimizer == "adam":
            return torch.optim.Adam(self.params, lr=c.lr, eps=c.adam_eps,
                                    weight_decay=c.weight_decay)
        return torch.optim.SGD(self.params, lr=c.lr, momentum=c.momentum,
                               weight_decay=c.weight_decay)

    def _loader(self, dataset: Dataset, sampler: Sampler) -> DataLoader:
        return make_loader(dataset, sampler, batch_size=self.config.batch_size,
                           workers=self.config.workers, pin_memory=self.device.type == "cuda")

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
        to summary.json)."""
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
        previous_handler = _install_sigterm_handler()
        try:
            while self.epoch < self.config.epochs:
                record = self._run_epoch(self.epoch + 1)
                self.epoch += 1
                self.history.append(record)
                self.save()
                if self.is_main:
                    self.metrics.add_epoch(self.history)
                self.log(format_record(record))
        except KeyboardInterrupt:
            self.log(
                f"interrupted during epoch {self.epoch + 1}; the checkpoint of epoch {self.epoch} "
                f"is intact: continue with --resume --output {self.output}"
            )
            raise
        finally:
            signal.signal(signal.SIGTERM, previous_handler)
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
        x_low = batch["x_low"].to(self.device, non_blocking=True)
        y = batch["y"].to(self.device, non_blocking=True)
        out = self.model(x_low, batch["x_high"], generator=self.generator,
                         deterministic=deterministic)
        return out, y

    def loss(self, out: ModelOutput, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy, the entropy regulariser on the attention map (when the
        model has one) and every :class:`~ats.contracts.Regularized` term."""
        loss = F.cross_entropy(out.logits, y, weight=self.class_weights)
        if out.ats is not None and self.config.entropy != 0.0:
            loss = loss + entropy_regularizer(out.ats.attention, self.config.entropy)
        for term in regularization_terms(self.model):
            loss = loss + term
        return loss

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
        return StepResult(loss.item(), int((out.logits.argmax(1) != y).sum()), y.shape[0],
                          entropy)

    def train_epoch(self, epoch: int) -> dict[str, float | None]:
        """One pass over the training set; returns its metrics."""
        self.train_sampler.set_epoch(epoch)
        set_epoch(self.train_set, epoch)
        loader = self._loader(self.train_set, self.train_sampler)
        steps = len(loader) if self.config.max_steps is None else min(len(loader),
                                                                       self.config.max_steps)
        totals = {"loss": 0.0, "errors": 0, "entropy": 0.0, "count": 0}
        has_entropy = False
        start = time.time()
        bar = self._bar(total=steps, desc=f"epoch {epoch}/{self.config.epochs}")
        for step, batch in enumerate(loader):
            if step >= steps:
                break
            try:
                result = self.train_step(batch)
            except FloatingPointError as exc:
                raise FloatingPointError(
                    f"{exc} at epoch {epoch}, step {step}; lower lr or raise smoothing (the "
                    "last good checkpoint is intact)"
                ) from None
            totals["count"] += result.count
            totals["loss"] += result.loss * result.count
            totals["errors"] += result.errors
            if result.entropy is not None:
                has_entropy = True
                totals["entropy"] += result.entropy
            rate = totals["count"] / max(time.time() - start, 1e-9)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{totals['loss'] / totals['count']:.4f}",
                                acc=f"{1 - totals['errors'] / totals['count']:.3f}",
                                samples_s=f"{rate:.1f}", refresh=False)
            if epoch == 1 and step == min(4, steps - 1) and steps > 10:
                per_step = (time.time() - start) / (step + 1)
                self.log(f"estimated time per epoch: {format_duration(per_step * steps)} "
                         f"({steps} steps of {per_step:.2f} s, evaluation not included)")
        if bar is not None:
            bar.close()
        seconds = time.time() - start
        count = max(totals["count"], 1)
        return {
            "train_loss": totals["loss"] / count,
            "train_error": totals["errors"] / count,
            "train_entropy": totals["entropy"] / count if has_entropy else None,
            "epoch_seconds": seconds,
            "samples_per_second": totals["count"] / max(seconds, 1e-9),
        }

    @torch.no_grad()
    def evaluate(self, *, deterministic: bool = False) -> dict[str, float]:
        """Test error as mean and std over ``eval_seeds`` sampling seeds
        (sampling is random at test time too, docs/method.md "Training and
        evaluation"); one pass for deterministic models and top-N inference."""
        self.model.eval()
        stochastic = self.classifier.stochastic and not deterministic
        seeds = range(self.config.eval_seeds) if stochastic else range(1)
        errors, losses = [], []
        loader = self._loader(self.test_set, EpochSampler(len(self.test_set), shuffle=False,
                                                          seed=0, rank=self.rank,
                                                          world_size=self.world_size))
        saved_state = self.generator.get_state()
        try:
            for seed in seeds:
                self.generator.manual_seed(1_000_003 + seed)
                wrong, loss_sum, count = 0, 0.0, 0
                for batch in loader:
                    out, y = self._forward(batch, deterministic=deterministic)
                    loss_sum += float(F.cross_entropy(out.logits, y, reduction="sum"))
                    wrong += int((out.logits.argmax(1) != y).sum())
                    count += y.shape[0]
                wrong, loss_sum, count = all_reduce_sum(self.device, wrong, loss_sum, count)
                errors.append(wrong / count)
                losses.append(loss_sum / count)
        finally:
            # evaluation must not change the training trajectory
            self.generator.set_state(saved_state)
        return {
            "test_loss": float(np.mean(losses)),
            "test_error": float(np.mean(errors)),
            "test_error_std": float(np.std(errors, ddof=1)) if len(errors) > 1 else 0.0,
        }

    def save_pictures(self, epoch: int) -> None:
        """Attention overlays and patches of the first ``pictures`` test items."""
        save_model_pictures(self.classifier, self.test_set, self._path("pictures"), epoch,
                            count=self.config.pictures, device=self.device)

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
            "rng": all_gather_objects(rng.capture(self.generator)),
        }

    def save(self) -> None:
        """Write the checkpoint atomically (rank 0 writes; every rank must call)."""
        if self.output is None:
            return
        state = self.state_dict()
        if self.is_main:
            save_checkpoint(self.output / CHECKPOINT, state)

    def load(self, path: str | Path) -> None:
        """Continue from a checkpoint: model, optimiser, random states, epoch.

        Raises:
            ValueError: the checkpoint is of another task or model, or its
                configuration differs in a setting that may not change on
                resume (:data:`ats.config.RESUMABLE`).
        """
        state = load_checkpoint(path, map_location="cpu")
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
        streams = rng.select_rank(state["rng"], self.rank, self.world_size)
        if streams is not None:
            rng.restore(streams, self.generator)
        self.log(f"resumed from {path} after epoch {self.epoch}")

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

    def _bar(self, total: int, desc: str):
        if not (self.progress and self.is_main):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True,
                    mininterval=0.5 if sys.stderr.isatty() else 10.0)


def _default_log(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


def _install_sigterm_handler():
    """A kill (SIGTERM) ends the run like Ctrl-C: the checkpoint stays intact."""

    def handler(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread
        return signal.getsignal(signal.SIGTERM)
