"""What every contrastive trainer here does around its epochs: the learning-rate schedule, seeds per epoch, resuming from a
checkpoint, one ``training_epochs`` row per epoch, and the summary with the mean speed at the end.

Used by :mod:`pipeline.train.token_embedder` and :mod:`pipeline.train.fingerprint`; each keeps its own model, data and loss.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline.fsutil import write_json
from pipeline.store import db
from pipeline.store.tables import run_metrics, training_epochs


def lr_lambda(step: int, total: int, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def seed_epoch(seed: int, epoch: int) -> torch.Generator:
    """Seed dropout, masks and shuffling from (seed, epoch) alone, so a resumed epoch replays exactly."""
    torch.manual_seed(seed * 100_003 + epoch)
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def resume_from(ckpt_path: Path, trainer, resume: bool, device: str, label: str) -> tuple[list[dict], int]:
    """(history, first epoch to run): with ``resume`` and a checkpoint at ``ckpt_path``, ``trainer.restore`` it and go on after its
    epoch; otherwise start from scratch (saying so when ``resume`` found nothing). ``label`` starts the printed line."""
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        trainer.restore(ckpt)
        print(f"{label}: resuming after epoch {ckpt['epoch'] + 1}", file=sys.stderr)
        return ckpt["history"], ckpt["epoch"] + 1
    if resume:
        print(f"{label}: --resume but no checkpoint at {ckpt_path}: starting from scratch", file=sys.stderr)
    return [], 0


def finished(ckpt_path: Path, summary_path: Path, epochs: int, label: str) -> dict | None:
    """The summary of a training that ran all ``epochs`` already, or None when something is left to train (or to write): the
    summary (written after the last checkpoint, so newer than it) lists ``epochs`` epochs and the checkpoint is of the last one.
    A resumed run that finds it done says so (``label`` starts the line) and trains, writes and records nothing."""
    if not (ckpt_path.exists() and summary_path.exists()) or summary_path.stat().st_mtime_ns < ckpt_path.stat().st_mtime_ns:
        return None
    summary = json.loads(summary_path.read_text())
    if summary.get("epochs") != epochs or len(summary.get("history", [])) != epochs:
        return None
    if torch.load(ckpt_path, map_location="cpu", weights_only=False).get("epoch") != epochs - 1:
        return None
    print(f"{label}: already trained ({epochs} epochs, {ckpt_path}); skipped", file=sys.stderr)
    return summary


def record_epoch(conn, run_id: str, model: str, row: dict) -> None:
    """The ``training_epochs`` row of one finished epoch (``row``: epoch, train_loss, val_recall_at_1, lr, seconds)."""
    db.upsert(conn, training_epochs, [{"run_id": run_id, "model": model, "epoch": row["epoch"], "train_loss": row["train_loss"], "val_loss": None,
                                       "val_recall_at_1": row["val_recall_at_1"], "lr": row["lr"], "seconds": row["seconds"],
                                       "recorded_at": db.utcnow()}])
    conn.commit()


def end_epoch(conn, run_id: str, model: str, row: dict, epochs: int, speed: str, unit: str, label: str,
              on_epoch_end: Callable[[int], None] | None) -> None:
    """After an epoch's checkpoint: its ``training_epochs`` row, its line on stderr (``row[speed]`` in ``unit``/s), then the
    caller's hook (tests kill a run there)."""
    record_epoch(conn, run_id, model, row)
    tqdm.write(f"{label}: epoch {row['epoch']}/{epochs} loss {row['train_loss']:.4f} val R@1 {row['val_recall_at_1']:.3f} lr {row['lr']:.2e} "
               f"{row['seconds']:.1f} s ({row[speed]:.0f} {unit}/s)", file=sys.stderr)
    if on_epoch_end:
        on_epoch_end(row["epoch"])


def finish(conn, step, summary: dict, summary_path: Path, *, stage: str, speed: str, start_epoch: int, label: str) -> dict:
    """Write ``summary`` (with its ``history``) to ``summary_path``, record the mean ``speed`` of the epochs run now as a
    ``run_metrics`` row of ``stage``, and set the recorded step's message; returns ``summary``."""
    write_json(summary_path, summary)
    history = summary["history"]
    speeds = [h[speed] for h in history[start_epoch:]]
    if speeds:
        db.upsert(conn, run_metrics, [{"run_id": summary["run_id"], "stage": stage, "metric": speed, "k": 0, "value": float(np.mean(speeds)),
                                       "recorded_at": db.utcnow()}])
        conn.commit()
    if history:
        step.message = f"{label}: {len(history)} epochs, loss {history[-1]['train_loss']:.4f}, val R@1 {history[-1]['val_recall_at_1']:.3f}"
    return summary
