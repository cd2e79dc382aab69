"""Pictures a person can look at: attention overlays, patches, curves.

matplotlib with the Agg backend (no display needed); every file is written
atomically so a kill never leaves a broken PNG.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from ats.train.checkpoint import atomic_write_bytes

__all__ = [
    "Chosen",
    "as_image",
    "chosen_patches",
    "look",
    "outline_patches",
    "pyplot",
    "save_attention_figure",
    "save_curves_figure",
    "save_model_pictures",
    "save_patches_figure",
    "save_png",
]


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | os.PathLike) -> None:
    """Write ``fig`` as a PNG at ``path`` atomically and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def as_image(x: np.ndarray) -> np.ndarray:
    """(C, h, w) -> (h, w) or (h, w, 3) in [0, 1] for imshow."""
    x = np.asarray(x)
    x = x / 255.0 if np.issubdtype(x.dtype, np.integer) else x.astype(np.float32)
    img = x[0] if x.shape[0] == 1 else np.moveaxis(x[:3], 0, -1)
    lo, hi = float(img.min()), float(img.max())
    if lo < 0.0 or hi > 1.0:  # augmented or normalised input: rescale to show it
        img = (img - lo) / max(hi - lo, 1e-8)
    return img


def outline_patches(ax: Any, offsets: np.ndarray, patch_size: Sequence[int],
                    scale: Sequence[float], *, color: str = "red", numbered: bool = True) -> None:
    """Outline patches on an image already drawn on ``ax`` (numbered 1, 2, ...
    in the model's order when ``numbered``).

    Args:
        offsets: (N, 2) top-left corners in x_high pixels.
        patch_size: (ph, pw) in x_high pixels.
        scale: (sy, sx), the drawn image's pixels per x_high pixel.
    """
    from matplotlib.patches import Rectangle

    sy, sx = scale
    for k, (r, c) in enumerate(offsets):
        ax.add_patch(Rectangle((c * sx, r * sy), patch_size[1] * sx, patch_size[0] * sy,
                               fill=False, edgecolor=color, linewidth=1.0))
        if numbered:
            ax.text(c * sx + 1, r * sy + 1, str(k + 1), color=color, fontsize=7, va="top")


def save_attention_figure(
    path: str | os.PathLike,
    x_low: np.ndarray,
    attention: np.ndarray | None,
    offsets: np.ndarray,
    patch_size: Sequence[int],
    high_shape: Sequence[int],
    *,
    titles: Sequence[str] | None = None,
    attention_title: str = "attention (patches in draw order)",
) -> None:
    """Two panels per image: the low view and the attention map, each with
    the sampled patches outlined (numbered in draw order).

    Args:
        x_low: (B, C, h, w) low-resolution views.
        attention: (B, h', w') attention distributions (or another method's
            score map); None: the low views only.
        offsets: (B, N, 2) patch top-left corners in x_high pixels.
        patch_size: (ph, pw) in x_high pixels.
        high_shape: (H, W) of x_high, to map patches onto the low view.
    """
    plt = pyplot()
    b = len(x_low)
    # Top row: the low view as the attention network sees it; bottom row: the
    # attention map. Both with the sampled patches outlined in draw order.
    rows = 1 if attention is None else 2
    fig, axes = plt.subplots(rows, b, figsize=(3.6 * b, 3.7 * rows), squeeze=False)
    for i in range(b):
        img = as_image(x_low[i])
        h, w = img.shape[:2]
        sy, sx = h / high_shape[0], w / high_shape[1]
        top = axes[0, i]
        top.imshow(img, cmap="gray", extent=(0, w, h, 0), interpolation="nearest")
        panels = [(top, "red")]
        if attention is not None:
            bottom = axes[1, i]
            shown = bottom.imshow(attention[i], cmap="viridis", extent=(0, w, h, 0),
                                  interpolation="nearest")
            fig.colorbar(shown, ax=bottom, fraction=0.046, pad=0.02)
            panels.append((bottom, "white"))
            bottom.set_title(attention_title, fontsize=8)
        for ax, color in panels:
            outline_patches(ax, offsets[i], patch_size, (sy, sx), color=color,
                            numbered=ax is top)
        for ax, _ in panels:
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
            ax.set_xticks([])
            ax.set_yticks([])
        top.set_title(titles[i] if titles is not None else f"item {i}", fontsize=9)
    fig.tight_layout()
    save_png(fig, path)


def save_patches_figure(
    path: str | os.PathLike,
    patches: np.ndarray,
    probs: np.ndarray,
    *,
    row_titles: Sequence[str] | None = None,
    label: str = "a",
) -> None:
    """A grid: one row per image, one column per sampled patch (in draw
    order), each titled with its attention probability.

    Args:
        patches: (B, N, C, ph, pw).
        probs: (B, N).
    """
    plt = pyplot()
    b, n = patches.shape[:2]
    fig, axes = plt.subplots(b, n, figsize=(1.6 * n, 1.8 * b), squeeze=False)
    for i in range(b):
        for k in range(n):
            ax = axes[i, k]
            ax.imshow(as_image(patches[i, k]), cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_title(f"{label}={probs[i, k]:.2g}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        if row_titles is not None:
            axes[i, 0].set_ylabel(row_titles[i], fontsize=7)
    save_png(fig, path)


def save_curves_figure(path: str | os.PathLike, history: Sequence[dict]) -> None:
    """Training loss and train/test error against epochs."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train")
    test_loss = [(h["epoch"], h["test_loss"]) for h in history if h.get("test_loss") is not None]
    if test_loss:
        ax_loss.plot(*zip(*test_loss), label="test")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_err.plot(epochs, [h["train_error"] for h in history], label="train")
    tested = [h for h in history if h.get("test_error") is not None]
    if tested:
        e = np.array([h["epoch"] for h in tested])
        m = np.array([h["test_error"] for h in tested])
        s = np.array([h.get("test_error_std") or 0.0 for h in tested])
        ax_err.plot(e, m, label="test (mean over sampling seeds)")
        ax_err.fill_between(e, m - s, m + s, alpha=0.25)
    ax_err.set_xlabel("epoch")
    ax_err.set_ylabel("error")
    ax_err.set_ylim(0, 1)
    ax_err.legend()
    fig.tight_layout()
    save_png(fig, path)


class Chosen(NamedTuple):
    """The patches a model read in one forward pass, as the pictures draw them.

    Attributes:
        scores: (B, *space) the attention (ATS) or score map (DPS), or None.
        offsets: (B, N, d) top-left corners in x_high pixels.
        patches: (B, N, C, *patch) the patches read.
        weights: (B, N) each patch's attention probability (ATS) or weight.
        label: the weight's name in titles: "a" (attention) or "w" (weight).
        caption: the title of the score map.
    """

    scores: Any
    offsets: Any
    patches: Any
    weights: Any
    label: str
    caption: str


def chosen_patches(out: Any) -> Chosen | None:
    """The patches a model output (:class:`ats.classifier.ModelOutput`) read:
    from its sampling record (``out.ats``) or selection record
    (``out.selection``, DPS and IPS); None for a model that reads no patches."""
    if out.ats is not None:
        ats = out.ats
        return Chosen(ats.attention, ats.offsets, ats.patches, ats.probs, "a",
                      "attention (patches in draw order)")
    if getattr(out, "selection", None) is not None:
        sel = out.selection
        return Chosen(sel.scores, sel.offsets, sel.patches, sel.weights, "w",
                      "scores (selected patches)")
    return None


def look(model: Any, batch: dict[str, Any], device: Any, *, seed: int) -> Any:
    """``model``'s output on ``batch`` as the pictures show it: evaluation
    mode, no gradients, sampling generator seeded by ``seed`` (so the same
    weights, items and seed draw the same patches).

    Args:
        batch: collated items, ``x_low`` (B, C, *low) (moved to ``device``)
            and ``x_high`` (left where it is: the model reads patches from it).
    """
    import torch

    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        return model(batch["x_low"].to(device), batch["x_high"], generator=generator)


def save_model_pictures(model: Any, dataset: Any, folder: str | os.PathLike, epoch: int, *,
                        count: int, device: Any, objective: Any = None) -> bool:
    """Where ``model`` looked on the first ``count`` items of ``dataset``: the
    overlay (attention, or the score map of DPS) and the patches, as
    ``epochNNNN_attention.png`` and ``epochNNNN_patches.png`` in ``folder``.

    Drawn for models whose output carries a sampling record (``out.ats``) or
    a selection record (``out.selection``, DPS and IPS) on 2-D images, with
    sampling seed 0 so that epochs compare; returns whether anything was drawn.
    ``objective`` (:mod:`ats.objective`) writes labels and predictions.
    """
    from torch.utils.data import default_collate

    from ats.objective import SingleLabel

    objective = SingleLabel() if objective is None else objective
    n = min(count, len(dataset))
    batch = default_collate([dataset[i] for i in range(n)])
    if batch["x_low"].ndim != 4:
        return False  # overlays are drawn for 2-D images only
    out = look(model, batch, device, seed=0)
    chosen = chosen_patches(out)
    if chosen is None:
        return False
    scores, offsets, patches, weights, label, caption = chosen
    pred = objective.predictions(out.logits).cpu()
    titles = [f"item {i}: label {objective.describe(y)}, predicted {objective.describe(p)}"
              for i, (y, p) in enumerate(zip(batch["y"], pred))]
    folder = Path(folder)
    patch = tuple(patches.shape[3:])
    save_attention_figure(folder / f"epoch{epoch:04d}_attention.png", batch["x_low"].numpy(),
                          None if scores is None else scores.cpu().numpy(),
                          offsets.cpu().numpy(), patch, tuple(batch["x_high"].shape[2:]),
                          titles=titles, attention_title=caption)
    save_patches_figure(folder / f"epoch{epoch:04d}_patches.png", patches.cpu().numpy(),
                        weights.cpu().numpy(), row_titles=titles, label=label)
    return True
