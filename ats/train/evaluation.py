"""Evaluation: the test error over several sampling seeds.

Sampling is random at test time too (docs/method.md, "Training and
evaluation"), so a stochastic model's test error is the mean and standard
deviation over seeded passes; evaluation restores the sampling generator, so
it never changes the training trajectory.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ats.objective import Objective, SingleLabel
from ats.train.devices import all_reduce_sum
from ats.train.hits import patch_hits, read_patches_of

__all__ = ["EVAL_SEED_BASE", "evaluate_model", "forward_batch", "time_forward"]

#: evaluation seed s draws with generator seed EVAL_SEED_BASE + s
EVAL_SEED_BASE = 1_000_003


def forward_batch(model: nn.Module, batch: dict[str, Any], device: torch.device,
                  generator: torch.Generator | None, *, deterministic: bool = False):
    """``model``'s output on ``batch`` and the labels, on ``device`` (``x_high``
    stays where it is: the model reads patches from it)."""
    x_low = batch["x_low"].to(device, non_blocking=True)
    y = batch["y"].to(device, non_blocking=True)
    return model(x_low, batch["x_high"], generator=generator, deterministic=deterministic), y


@torch.no_grad()
def evaluate_model(model: nn.Module, loader: Iterable[dict[str, Any]], *, device: torch.device,
                   generator: torch.Generator, seeds: Sequence[int], deterministic: bool = False,
                   before_batch: Callable[[], None] = lambda: None,
                   objective: Objective | None = None) -> dict[str, float]:
    """Test loss and error (mean, and std over ``seeds``), summed over ranks;
    ``objective`` (default single-label) gives the loss and the error. When
    the items carry ``"boxes"`` and the model reads patches, also
    ``test_hit_rate``: the fraction of patches read that hit a box
    (:mod:`ats.train.hits`), over every seed."""
    objective = SingleLabel() if objective is None else objective
    model.eval()
    errors, losses = [], []
    hits, patches = 0, 0
    saved_state = generator.get_state()
    try:
        for seed in seeds:
            generator.manual_seed(EVAL_SEED_BASE + seed)
            wrong, loss_sum, count = 0, 0.0, 0
            for batch in loader:
                before_batch()
                out, y = forward_batch(model, batch, device, generator,
                                       deterministic=deterministic)
                loss_sum += float(objective.loss(out.logits, y, reduction="sum"))
                wrong += int(objective.wrong(out.logits, y).sum())
                count += y.shape[0]
                read = read_patches_of(out) if "boxes" in batch else None
                if read is not None:
                    hit = patch_hits(*read, batch["boxes"])
                    hits, patches = hits + int(hit.sum()), patches + hit.numel()
            wrong, loss_sum, count = all_reduce_sum(device, wrong, loss_sum, count)
            errors.append(wrong / count)
            losses.append(loss_sum / count)
        hits, patches = all_reduce_sum(device, hits, patches)
    finally:
        generator.set_state(saved_state)
    result = {
        "test_loss": float(np.mean(losses)),
        "test_error": float(np.mean(errors)),
        "test_error_std": float(np.std(errors, ddof=1)) if len(errors) > 1 else 0.0,
    }
    if patches:
        result["test_hit_rate"] = hits / patches
    return result


@torch.no_grad()
def time_forward(model: nn.Module, batch: dict[str, Any], device: torch.device,
                 generator: torch.Generator) -> float:
    """Seconds per item of one evaluation-mode forward pass on ``batch``."""
    model.eval()
    began = time.perf_counter()
    forward_batch(model, batch, device, generator)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - began) / len(batch["y"])
