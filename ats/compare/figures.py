"""The figures of ``ats-compare``: the learning curves of several runs, and
where each run's model looked on the same test images.

Drawn with the helpers of :mod:`ats.train.pictures` (the forward pass as the
run's own pictures make it, the patches' outlines, atomic PNG writes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ats.compare.runs import Run
from ats.train.pictures import (
    Chosen,
    as_image,
    chosen_patches,
    look,
    outline_patches,
    pyplot,
    save_png,
)

__all__ = ["Column", "FULL_RESOLUTION_MAX", "column_of", "save_curves", "save_selections"]

#: images whose larger side is at most this many pixels are drawn at full
#: resolution (the patches' own pixels); larger ones as their low view
FULL_RESOLUTION_MAX = 512


def save_curves(path: str | os.PathLike, runs: Sequence[Run]) -> None:
    """Two panels, one line per run: the test error by epoch (mean over
    sampling seeds, ± std shaded) and, for runs that record it, the mean
    attention entropy of training (``train_entropy``); a third, the fraction
    of patches read on target (``test_hit_rate``), when a run records it."""
    plt = pyplot()
    with_hits = any(m.get("test_hit_rate") is not None for run in runs for m in run.tested)
    fig, axes = plt.subplots(1, 3 if with_hits else 2, figsize=(16.5 if with_hits else 11, 4))
    ax_err, ax_ent = axes[:2]
    entropies = 0
    for k, run in enumerate(runs):
        color = f"C{k % 10}"
        tested = run.tested
        e = np.array([m["epoch"] for m in tested])
        mean = np.array([m["test_error"] for m in tested])
        std = np.array([m.get("test_error_std") or 0.0 for m in tested])
        ax_err.plot(e, mean, marker="o", markersize=3, color=color, label=run.label)
        ax_err.fill_between(e, mean - std, mean + std, color=color, alpha=0.2)
        entropy = [(m["epoch"], m["train_entropy"]) for m in run.metrics
                   if m.get("train_entropy") is not None]
        if entropy:
            entropies += 1
            ax_ent.plot(*zip(*entropy), marker="o", markersize=3, color=color, label=run.label)
        hits = [(m["epoch"], m["test_hit_rate"]) for m in tested
                if m.get("test_hit_rate") is not None]
        if with_hits and hits:
            axes[2].plot(*zip(*hits), marker="o", markersize=3, color=color, label=run.label)
    ax_err.set(xlabel="epoch", ylabel="test error", ylim=(0, 1),
               title="test error (mean ± std over sampling seeds)")
    ax_err.legend(fontsize=8)
    ax_ent.set(xlabel="epoch", ylabel="entropy (nats)", title="attention entropy (training)")
    if entropies:
        ax_ent.legend(fontsize=8)
    else:  # DPS, IPS and the CNNs have no attention distribution to measure
        ax_ent.text(0.5, 0.5, "no run records an attention entropy", ha="center",
                    va="center", transform=ax_ent.transAxes)
    ax_ent.ticklabel_format(axis="y", useOffset=False)  # entropies near log K: no "+5.544"
    if with_hits:
        axes[2].set(xlabel="epoch", ylabel="fraction of patches read", ylim=(0, 1),
                    title="patches on target (test)")
        axes[2].legend(fontsize=8)
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    save_png(fig, path)


@dataclass
class Column:
    """One run's column of the selections figure.

    Attributes:
        title: the run's label, its last test error and where its weights are from.
        chosen: the patches its model read on the images (offsets (B, N, 2),
            on the CPU), or None for a model that reads no patches.
        predictions: the model's prediction per image, as text.
    """

    title: str
    chosen: Chosen | None
    predictions: list[str]


def column_of(run: Run, model: torch.nn.Module, batch: dict[str, Any], device: torch.device, *,
              seed: int, objective: Any, weights_from: dict[str, Any] | None = None) -> Column:
    """What ``run``'s ``model`` read on ``batch``: one forward pass in
    evaluation mode with the sampling generator seeded by ``seed``
    (:func:`ats.train.pictures.look`, as the run's own pictures draw it).

    Args:
        batch: collated test items, ``x_low`` (B, C, h, w).
        objective: the task's objective, to write the predictions.
        weights_from: ``{"epoch", "step"}`` of the checkpoint the weights are from.
    """
    out = look(model, batch, device, seed=seed)
    chosen = chosen_patches(out)
    if chosen is not None:
        chosen = Chosen(*(v.detach().cpu() if isinstance(v, torch.Tensor) else v for v in chosen))
    final = run.tested[-1]
    title = f"{run.label}\ntest error {final['test_error']:.3f} (epoch {final['epoch']})"
    if weights_from is not None and (weights_from["step"] is not None
                                     or weights_from["epoch"] != final["epoch"]):
        at = f"epoch {weights_from['epoch']}"
        if weights_from["step"] is not None:
            at += f", step {weights_from['step']}"
        title += f"\nweights of {at}"
    predictions = [objective.describe(p) for p in objective.predictions(out.logits).cpu()]
    return Column(title, chosen, predictions)


def _views(batch: dict[str, Any]) -> list[tuple[np.ndarray, tuple[float, float], str]]:
    """Per image: what to draw (h, w[, 3]), its pixels per x_high pixel (sy,
    sx), and what it is. Small in-memory images at full resolution; others
    as their low view (a batch of sources: each image's own part of it)."""
    from ats.sources.batch import as_source_batch, is_sources

    x_low, x_high = batch["x_low"], batch["x_high"]
    views = []
    if is_sources(x_high):
        sources = as_source_batch(x_high)
        lows, highs = sources.low_sizes_for(x_low).tolist(), sources.high_sizes.tolist()
        for i, ((h, w), (H, W)) in enumerate(zip(lows, highs)):
            views.append((as_image(x_low[i, :, :h, :w].numpy()), (h / H, w / W), "low view"))
        return views
    H, W = x_high.shape[-2:]
    full = max(H, W) <= FULL_RESOLUTION_MAX
    for i in range(len(x_low)):
        if full:
            views.append((as_image(np.asarray(x_high[i])), (1.0, 1.0), "full resolution"))
        else:
            img = as_image(x_low[i].numpy())
            views.append((img, (img.shape[0] / H, img.shape[1] / W), "low view"))
    return views


def save_selections(path: str | os.PathLike, batch: dict[str, Any], columns: Sequence[Column],
                    *, objective: Any) -> None:
    """One row per image, one column per run: the image with the patches the
    run's model read outlined and numbered in its order (draw order for ATS,
    selection order for DPS and IPS).

    Args:
        batch: the collated test items, ``x_low`` (B, C, h, w), ``x_high``, ``y``.
        columns: one per run (:func:`column_of`).
    """
    plt = pyplot()
    views = _views(batch)
    rows, cols = len(views), len(columns)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows + 0.6), squeeze=False)
    for i, (img, scale, kind) in enumerate(views):
        for j, column in enumerate(columns):
            ax = axes[i, j]
            h, w = img.shape[:2]
            # extent: pixel (r, c) spans [c, c + 1], so an outline at an offset
            # covers exactly the patch's pixels (as in the run's own pictures)
            ax.imshow(img, cmap="gray", vmin=0, vmax=1, extent=(0, w, h, 0),
                      interpolation="nearest")
            if column.chosen is not None:
                patch = tuple(column.chosen.patches.shape[-2:])
                outline_patches(ax, column.chosen.offsets[i].numpy(), patch, scale)
                caption = f"predicted {column.predictions[i]}"
            else:
                caption = f"predicted {column.predictions[i]} (no patches: whole view)"
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(caption, fontsize=8)
            if i == 0:
                ax.set_title(column.title, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"test item {i} ({kind})\nlabel {objective.describe(batch['y'][i])}",
                              fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
