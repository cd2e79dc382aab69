"""The training and evaluation loop.

One :class:`Trainer` per run: it builds the task's data and model from a
:class:`RunConfig`, trains with progress bars, evaluates over several
sampling seeds, writes metrics (CSV, JSON, TensorBoard when installed),
pictures and an atomic checkpoint every epoch, and resumes exactly.

Runs in one process, or under ``torchrun`` with DistributedDataParallel:
each rank trains on its own shard with its own seeds (``RANK``,
``WORLD_SIZE``), evaluation sums errors over ranks, and only rank 0 writes
files. (Train metrics are rank 0's shard; a resumed multi-rank run restores
rank 0's random states on every rank.)
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from ats.core.regularizers import attention_entropy, entropy_regularizer
from ats.registry import task as task_registry
from ats.task import Task
from ats.train.checkpoint import atomic_write_json, atomic_write_text, load_checkpoint, save_checkpoint
from ats.train.config import RunConfig
from ats.train.pictures import save_attention_figure, save_curves_figure, save_patches_figure

__all__ = ["Trainer", "EpochSampler", "resolve_device"]

CHECKPOINT = "checkpoint.pt"
METRICS_CSV = "metrics.csv"
SUMMARY = "summary.json"
CONFIG = "config.json"
METRIC_COLUMNS = (
    "epoch", "lr", "train_loss", "train_error", "train_entropy", "test_loss", "test_error",
    "test_error_std", "test_error_topk", "epoch_seconds", "samples_per_second",
)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device {name!r} is not a valid torch device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available here")
    return device


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class EpochSampler(Sampler[int]):
    """A shuffled order that depends only on (seed, epoch, rank).

    So an interrupted run resumed at epoch e sees the same order as an
    uninterrupted one, and with several ranks each sees a disjoint shard.
    """

    def __init__(self, size: int, *, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        return iter(order[self.rank :: self.world_size])

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world_size))


class Trainer:
    """Train and evaluate one model of one task.

    Args:
        config: the resolved configuration.
        task: the task (default: built from ``config.task``).
        log: where messages go (default: ``tqdm.write`` to stderr).
        progress: show progress bars.
    """

    def __init__(self, config: RunConfig, *, task: Task | None = None,
                 log: Callable[[str], None] | None = None, progress: bool = True) -> None:
        self.config = config
        self.task = task if task is not None else task_registry.build(config.task)
        self.progress = progress
        self.rank = int(os.environ.get("RANK", 0))
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self._log = log or _default_log
        self._check_config()
        self.device = _init_distributed(resolve_device(config.device), self.world_size)
        self.output = Path(config.output) if config.output else None

        _seed_everything(config.seed + self.rank)
        self.train_set, self.test_set = self.task.datasets(config)
        if len(self.train_set) == 0 or len(self.test_set) == 0:
            raise ValueError(
                f"task {config.task!r} produced an empty data set (train {len(self.train_set)}, "
                f"test {len(self.test_set)} items)"
            )
        self.model = self.task.build_model(config).to(self.device)
        self._check_geometry()
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = self._build_optimizer()
        weights = self.task.class_weights(self.train_set) if config.class_weights else None
        self.class_weights = weights.to(self.device) if weights is not None else None
        self.train_sampler = EpochSampler(len(self.train_set), shuffle=True, seed=config.seed,
                                          rank=self.rank, world_size=self.world_size)
        self.generator = self._new_generator(config.seed * 7919 + self.rank)
        self.history: list[dict[str, Any]] = []
        self.epoch = 0  # epochs completed
        self.tensorboard = None

    # -- setup -------------------------------------------------------------------
    def _check_config(self) -> None:
        c = self.config
        for name in ("epochs", "batch_size", "n_patches", "eval_seeds", "eval_every"):
            value = getattr(c, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if c.workers < 0:
            raise ValueError(f"workers must be >= 0, got {c.workers}")
        if c.lr <= 0:
            raise ValueError(f"lr must be positive, got {c.lr}")
        if c.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {c.optimizer!r}")
        if c.clip_norm is not None and c.clip_norm <= 0:
            raise ValueError(f"clip_norm must be positive or None, got {c.clip_norm}")
        if c.max_steps is not None and c.max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer or None, got {c.max_steps}")

    def _check_geometry(self) -> None:
        """Fail before training when N or the patch cannot fit (one dry forward
        of the attention network on zeros of the real size)."""
        if self.config.model != "ats":
            return
        low, high = self.task.input_shapes(self.config)
        ats = _unwrap(self.model).ats
        with torch.no_grad():
            attention = ats.attention_map(torch.zeros((1, *low), device=self.device))
        positions = int(np.prod(attention.shape[1:]))
        if not ats.sampler.replace and self.config.n_patches > positions:
            raise ValueError(
                f"n_patches={self.config.n_patches} is larger than the attention map "
                f"{tuple(attention.shape[1:])} ({positions} positions); lower n_patches or "
                "use --sampler with_replacement"
            )
        patch = self.config.patch_size
        patch = (patch,) * (len(high) - 1) if isinstance(patch, int) else tuple(patch)
        if len(patch) != len(high) - 1 or any(p > h for p, h in zip(patch, high[1:])):
            raise ValueError(
                f"patch_size {self.config.patch_size} does not fit the high-resolution "
                f"image {tuple(high[1:])}"
            )

    def _build_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        if c.optimizer == "adam":
            return torch.optim.Adam(params, lr=c.lr, eps=c.adam_eps, weight_decay=c.weight_decay)
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)

    def _new_generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)

    def _loader(self, dataset: Dataset, sampler: Sampler | None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.config.workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_seed_worker,
            drop_last=False,
        )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def log(self, message: str) -> None:
        if self.is_main:
            self._log(message)

    # -- the loop ----------------------------------------------------------------
    def fit(self, *, resume: bool = False) -> dict[str, Any]:
        """Train for ``config.epochs`` epochs (continuing a checkpoint when
        ``resume``); returns the summary (also written to summary.json)."""
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
                self._write_metrics()
                self.log(_format_record(record))
        except KeyboardInterrupt:
            self.log(
                f"interrupted during epoch {self.epoch + 1}; the checkpoint of epoch {self.epoch} "
                f"is intact: continue with --resume --output {self.output}"
            )
            raise
        finally:
            signal.signal(signal.SIGTERM, previous_handler)
            if self.tensorboard is not None:
                self.tensorboard.flush()
        summary = self._summary(time.time() - start)
        if self.output is not None and self.is_main:
            atomic_write_json(self.output / SUMMARY, summary)
            save_curves_figure(self.output / "curves.png", self.history)
        return summary

    def _run_epoch(self, epoch: int) -> dict[str, Any]:
        lr = self._set_lr(epoch)
        train = self.train_epoch(epoch)
        record: dict[str, Any] = {"epoch": epoch, "lr": lr, **train}
        if epoch % self.config.eval_every == 0 or epoch == self.config.epochs:
            record.update(self.evaluate())
            if self.config.eval_topk and self.config.model == "ats":
                record["test_error_topk"] = self.evaluate(deterministic=True)["test_error"]
            if self.output is not None and self.is_main and self.config.pictures > 0:
                self.save_pictures(epoch)
        if self.tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "epoch" and value is not None:
                    self.tensorboard.add_scalar(key, value, epoch)
        return record

    def _set_lr(self, epoch: int) -> float:
        c = self.config
        drops = sum(1 for e in c.lr_decay_at if epoch > e)  # drop *from* epoch e + 1
        lr = c.lr * c.lr_decay ** drops
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _forward(self, batch: dict[str, Any], *, deterministic: bool = False):
        x_low = batch["x_low"].to(self.device, non_blocking=True)
        y = batch["y"].to(self.device, non_blocking=True)
        out = self.model(x_low, batch["x_high"], generator=self.generator,
                         deterministic=deterministic)
        return out, y

    def _loss(self, out, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        task_loss = F.cross_entropy(out.logits, y, weight=self.class_weights)
        loss = task_loss
        if out.ats is not None and self.config.entropy != 0.0:
            loss = loss + entropy_regularizer(out.ats.attention, self.config.entropy)
        for module in self.model.modules():
            extra = getattr(module, "regularization", None)
            if callable(extra) and module is not self.model:
                loss = loss + extra()
        return loss, task_loss

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training set; returns its metrics."""
        self.model.train()
        self.train_sampler.set_epoch(epoch)
        _set_dataset_epoch(self.train_set, epoch)
        loader = self._loader(self.train_set, self.train_sampler)
        steps = len(loader) if self.config.max_steps is None else min(len(loader), self.config.max_steps)
        totals = {"loss": 0.0, "errors": 0, "entropy": 0.0, "count": 0}
        start = time.time()
        bar = self._bar(total=steps, desc=f"epoch {epoch}/{self.config.epochs}")
        params = [p for p in self.model.parameters() if p.requires_grad]
        for step, batch in enumerate(loader):
            if step >= steps:
                break
            out, y = self._forward(batch)
            loss, _ = self._loss(out, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"the loss became {loss.item()} at epoch {epoch}, step {step}; lower lr or "
                    "raise smoothing (the last good checkpoint is intact)"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.config.clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, self.config.clip_norm)
            self.optimizer.step()
            n = y.shape[0]
            totals["count"] += n
            totals["loss"] += loss.item() * n
            totals["errors"] += int((out.logits.argmax(1) != y).sum())
            if out.ats is not None:
                totals["entropy"] += float(attention_entropy(out.ats.attention.detach()).sum())
            rate = totals["count"] / max(time.time() - start, 1e-9)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{totals['loss'] / totals['count']:.4f}",
                                acc=f"{1 - totals['errors'] / totals['count']:.3f}",
                                samples_s=f"{rate:.1f}", refresh=False)
            if epoch == 1 and step == min(4, steps - 1) and steps > 10:
                per_step = (time.time() - start) / (step + 1)
                self.log(f"estimated time per epoch: {_duration(per_step * steps)} "
                         f"({steps} steps of {per_step:.2f} s, evaluation not included)")
        if bar is not None:
            bar.close()
        seconds = time.time() - start
        count = max(totals["count"], 1)
        return {
            "train_loss": totals["loss"] / count,
            "train_error": totals["errors"] / count,
            "train_entropy": totals["entropy"] / count if self.config.model == "ats" else None,
            "epoch_seconds": seconds,
            "samples_per_second": totals["count"] / max(seconds, 1e-9),
        }

    @torch.no_grad()
    def evaluate(self, *, deterministic: bool = False) -> dict[str, float]:
        """Test error as mean and std over ``eval_seeds`` sampling seeds
        (sampling is random at test time too, ATS_SPEC 1.8); one pass for the
        deterministic baselines and for top-N inference."""
        self.model.eval()
        stochastic = self.config.model == "ats" and not deterministic
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
                wrong, loss_sum, count = _all_reduce_sum(self.device, wrong, loss_sum, count)
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

    # -- pictures ----------------------------------------------------------------
    @torch.no_grad()
    def save_pictures(self, epoch: int) -> None:
        """Attention overlays and patches for the first ``pictures`` test items."""
        if self.config.model != "ats":
            return
        n = min(self.config.pictures, len(self.test_set))
        items = [self.test_set[i] for i in range(n)]
        batch = torch.utils.data.default_collate(items)
        if batch["x_low"].ndim != 4:
            return  # overlays are drawn for 2-D images only
        self.model.eval()
        generator = self._new_generator(0)
        x_low = batch["x_low"].to(self.device)
        out = self.model(x_low, batch["x_high"], generator=generator)
        pred = out.logits.argmax(1).cpu()
        titles = [f"item {i}: label {int(y)}, predicted {int(p)}"
                  for i, (y, p) in enumerate(zip(batch["y"], pred))]
        folder = self.output / "pictures"
        ats = out.ats
        patch = tuple(ats.patches.shape[3:])
        save_attention_figure(folder / f"epoch{epoch:04d}_attention.png", batch["x_low"].numpy(),
                              ats.attention.cpu().numpy(), ats.offsets.cpu().numpy(), patch,
                              tuple(batch["x_high"].shape[2:]), titles=titles)
        save_patches_figure(folder / f"epoch{epoch:04d}_patches.png", ats.patches.cpu().numpy(),
                            ats.probs.cpu().numpy(), row_titles=titles)

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
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional dependency
        except ImportError:
            self.tensorboard = None
        else:
            self.tensorboard = SummaryWriter(str(self.output / "tensorboard"))

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "config": self.config.to_dict(),
            "model": _unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "sampling": self.generator.get_state(),
            },
        }

    def save(self) -> None:
        """Write the checkpoint atomically (rank 0 only)."""
        if self.output is not None and self.is_main:
            save_checkpoint(self.output / CHECKPOINT, self.state_dict())

    def load(self, path: str | os.PathLike) -> None:
        """Continue from a checkpoint: model, optimiser, RNG states, epoch."""
        state = load_checkpoint(path, map_location="cpu")
        saved = state.get("config", {})
        for key in ("task", "model"):
            if saved.get(key) != getattr(self.config, key):
                raise ValueError(
                    f"the checkpoint {path} is for {key}={saved.get(key)!r}, not "
                    f"{getattr(self.config, key)!r}"
                )
        _unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        rng = state["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.generator.set_state(rng["sampling"])
        self.log(f"resumed from {path} after epoch {self.epoch}")

    def _write_metrics(self) -> None:
        """Rewrite metrics.csv from the history in the checkpoint (atomic), so
        the CSV never disagrees with the checkpoint after a crash."""
        if self.output is None or not self.is_main:
            return
        lines = [",".join(METRIC_COLUMNS)]
        for record in self.history:
            lines.append(",".join(_csv_value(record.get(c)) for c in METRIC_COLUMNS))
        atomic_write_text(self.output / METRICS_CSV, "\n".join(lines) + "\n")

    def _summary(self, seconds: float) -> dict[str, Any]:
        tested = [h for h in self.history if h.get("test_error") is not None]
        best = min(tested, key=lambda h: h["test_error"]) if tested else None
        last = tested[-1] if tested else None
        return {
            "task": self.config.task,
            "model": self.config.model,
            "epochs": self.epoch,
            "final_test_error": last["test_error"] if last else None,
            "final_test_error_std": last["test_error_std"] if last else None,
            "best_test_error": best["test_error"] if best else None,
            "best_epoch": best["epoch"] if best else None,
            "final_train_loss": self.history[-1]["train_loss"] if self.history else None,
            "first_train_loss": self.history[0]["train_loss"] if self.history else None,
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


# -- helpers ----------------------------------------------------------------------


def _default_log(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


def _seed_worker(worker_id: int) -> None:
    # Each worker's numpy/random seed follows torch's per-worker seed.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _set_dataset_epoch(dataset: Dataset, epoch: int) -> None:
    set_epoch = getattr(dataset, "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)


def _init_distributed(device: torch.device, world_size: int) -> torch.device:
    """Under ``torchrun`` (WORLD_SIZE > 1): join the process group (NCCL on
    CUDA, Gloo on the CPU); each rank takes the GPU of its LOCAL_RANK."""
    if world_size <= 1:
        return device
    import torch.distributed as dist

    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def _all_reduce_sum(device: torch.device, *values: float) -> tuple[float, ...]:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return tuple(t.tolist())


def _install_sigterm_handler():
    """A kill (SIGTERM) ends the run like Ctrl-C: the checkpoint stays intact."""

    def handler(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread
        return signal.getsignal(signal.SIGTERM)


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _format_record(r: dict[str, Any]) -> str:
    text = (f"epoch {r['epoch']}: train loss {r['train_loss']:.4f}, "
            f"train error {r['train_error']:.3f}")
    if r.get("test_error") is not None:
        text += f", test error {r['test_error']:.3f} ± {r['test_error_std']:.3f}"
    if r.get("test_error_topk") is not None:
        text += f" (top-N {r['test_error_topk']:.3f})"
    text += f", {r['samples_per_second']:.1f} samples/s, {_duration(r['epoch_seconds'])}"
    return text

