"""Training curves as PNGs (matplotlib's object API, no pyplot state), written atomically; figures inlined in HTML reports."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

from pipeline.fsutil import atomic_path


def draw_loss(ax, epoch_losses: Sequence[float], batch_losses: Sequence[Sequence[float]], ylabel: str = "loss") -> None:
    """Every batch's loss (thin line, at its fraction of the epoch) and each epoch's average (dots)."""
    xs, ys = [], []
    for epoch, losses in enumerate(batch_losses):
        xs += [epoch + (i + 1) / len(losses) for i in range(len(losses))]
        ys += list(losses)
    ax.plot(xs, ys, lw=0.6, alpha=0.5, label="batch")
    ax.plot(range(1, len(epoch_losses) + 1), epoch_losses, "o-", label="epoch average")
    ax.set(xlabel="epoch", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend()


def inline_png(fig, alt: str | None = None, **savefig) -> str:
    """``fig`` as an ``<img>`` tag holding its PNG (a self-contained HTML report needs no image files); ``savefig``: keyword
    arguments of ``fig.savefig`` (dpi, bbox_inches)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig)
    alt_attr = f' alt="{alt}"' if alt is not None else ""
    return f'<img{alt_attr} src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def save_figure(fig, path: str | Path) -> Path:
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def plot_contrastive_training(history: Sequence[dict], path: str | Path, title: str) -> Path:
    """The embedder's training curve: InfoNCE loss (per batch and per epoch) beside val Recall@1 per epoch."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    loss_ax, recall_ax = fig.subplots(1, 2)
    draw_loss(loss_ax, [h["train_loss"] for h in history], [h.get("batch_losses") or [h["train_loss"]] for h in history], "InfoNCE loss")
    epochs = [h["epoch"] for h in history]
    recall = [h["val_recall_at_1"] for h in history]
    recall_ax.plot(epochs, recall, "o-", color="tab:green")
    for x, y in zip(epochs, recall, strict=True):
        recall_ax.annotate(f"{y:.3f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    recall_ax.set(xlabel="epoch", ylabel="val Recall@1", xticks=epochs)
    recall_ax.margins(y=0.15)  # room for the labels
    recall_ax.grid(alpha=0.3)
    fig.suptitle(title)
    return save_figure(fig, path)
