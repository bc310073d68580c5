"""Contrastive training of the TokenEmbedder: InfoNCE with in-batch negatives, AdamW, warmup + cosine, an EMA of the weights.

Writes (paths from :mod:`pipeline.paths`)::

    runs/<run_id>/models/embedder.pt            checkpoint after every epoch (atomic)
    runs/<run_id>/models/embedder.json          settings and per-epoch history
    runs/<run_id>/models/training_curve.png     loss per batch and epoch, val Recall@1 per epoch (after every epoch)

and one ``training_epochs`` row per epoch under the run id. Every epoch starts from seeds derived from (seed, epoch),
so a run resumed from its last checkpoint after a kill ends with exactly the weights of an uninterrupted run (on CPU).
The ``train embedder`` step (:mod:`pipeline.steps.training`) reads the config and builds the splits; this module
takes settings objects and paths.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import select
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline import paths
from pipeline.config import EmbedderSettings, TrainSettings
from pipeline.data.dataset import RetrievalProbe, TokenPairDataset, TrackSource
from pipeline.fsutil import atomic_path
from pipeline.models.token_embedder import TokenEmbedder, info_nce
from pipeline.plots import plot_contrastive_training
from pipeline.store import db
from pipeline.store.tables import tracks
from pipeline.tokenize.catalog import find_codec
from pipeline.tokenize.files import load_tokens
from pipeline.train.loop import end_epoch, finish, finished, lr_lambda, resume_from, seed_epoch


def read_split(splits_dir: Path, split: str, tokens_root: Path, url: str | None = None) -> list[TrackSource]:
    """The tracks of one split list (token file paths relative to ``tokens_root``), with their canonical audio when known."""
    path = paths.split_list(splits_dir, split)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such split list (cloudtune splits writes it)")
    by_track: dict[str, list[Path]] = {}
    for line in path.read_text().split():
        by_track.setdefault(Path(line).name.split(".")[0], []).append(tokens_root / line)
    if not by_track:
        raise ValueError(f"{path}: the {split} split is empty")
    with db.connect(url) as conn:
        audio = dict(conn.execute(select(tracks.c.track_id, tracks.c.audio_path).where(tracks.c.track_id.in_(list(by_track)))).all())
    return [TrackSource(t, tuple(files), paths.canonical_audio(audio[t]) if t in audio else None) for t, files in sorted(by_track.items())]


def _worker_init(_worker_id: int) -> None:
    """A forked DataLoader worker uses FAISS (the rvq codec in the collator) single-threaded: FAISS's OpenMP pool does not survive
    fork, and when the parent process had used FAISS already (codec training in the same process, e.g. an Airflow dag.test() run),
    the worker's first search never returned."""
    import faiss

    faiss.omp_set_num_threads(1)


@dataclass
class TrainingData:
    """The train and val pair datasets, the val Recall@1 probe and what the token files say about their tokenizer."""

    train: TokenPairDataset
    val: TokenPairDataset
    probe: RetrievalProbe
    codebook_size: int
    frame_rate: float
    codec_version: str
    rvq: object | None  # the rvq codec that made the tokens, when it is in this home (codebook init, online augmentation)
    online_augmentation: bool


def load_data(tokens_root: Path, splits_dir: Path, s: TrainSettings, max_frames: int, url: str | None = None) -> TrainingData:
    train_tracks = read_split(splits_dir, "train", tokens_root, url)
    val_tracks = read_split(splits_dir, "val", tokens_root, url)
    _, meta = load_tokens(train_tracks[0].token_files[0])
    codebook_size, frame_rate = int(meta["codebook_size"]), float(meta["frame_rate"])
    rvq = find_codec(meta["codec_version"]) if meta["backend"] == "rvq" else None
    codec = rvq if s.augment_audio else None
    if s.augment_audio and codec is None:
        print(f"train: no online audio augmentation (backend {meta['backend']}, codec {meta['codec_version']} not here): token views only",
              file=sys.stderr)
    train_ds = TokenPairDataset(train_tracks, s, codebook_size, frame_rate, codec)
    val_ds = TokenPairDataset(val_tracks, s, codebook_size, frame_rate, codec)
    if train_ds.clip_frames > max_frames:
        raise ValueError(f"training.clip_seconds {s.clip_seconds:g} gives {train_ds.clip_frames} frames > embedder.max_frames {max_frames}")
    probe = RetrievalProbe(val_ds, s.val_queries_per_track, s.seed, distractors=train_ds.codes)  # the train tracks are in the catalog too
    return TrainingData(train_ds, val_ds, probe, codebook_size, frame_rate, meta["codec_version"], rvq, codec is not None)


@dataclass
class Trainer:
    """The model and everything a checkpoint must restore to resume exactly."""

    model: TokenEmbedder
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: torch.optim.swa_utils.AveragedModel | None
    ema_decay: float
    steps: int
    drop_last: bool

    @property
    def scored(self) -> torch.nn.Module:
        """What validation and search use: the averaged weights when there are any."""
        return self.ema.module if self.ema is not None else self.model

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                **({"ema": self.ema.state_dict(), "ema_model": self.ema.module.state_dict()} if self.ema is not None else {})}

    def restore(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.ema is not None and "ema" in ckpt:
            self.ema.load_state_dict(ckpt["ema"])


def build_trainer(data: TrainingData, emb_s: EmbedderSettings, s: TrainSettings, device: str) -> Trainer:
    torch.manual_seed(s.seed)
    model = TokenEmbedder(data.train.codes[0].shape[0], data.codebook_size, emb_s)
    if emb_s.init_from_codebooks and data.rvq is not None:
        model.init_from_codebooks(data.rvq.codebooks, s.seed)
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    drop_last = len(data.train) > s.batch_size  # a last, smaller batch would weaken in-batch negatives
    total = (len(data.train) // s.batch_size if drop_last else 1) * s.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_lambda, total=total, warmup=max(1, int(s.warmup_ratio * total))))
    # An exponential moving average of the weights (training.ema_decay, 0 = off) is what validation and search use:
    # it smooths the step-to-step noise of a small-batch contrastive run. Its horizon, 1 / (1 - decay) steps, never
    # spans more than a quarter of the run, so a short run (the demo's 2 epochs) is not dragged back to its first steps.
    ema_decay = max(0.0, min(s.ema_decay, 1 - 4 / total)) if s.ema_decay else 0.0
    ema = (torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema_decay)) if s.ema_decay else None)
    return Trainer(model, optimizer, scheduler, ema, ema_decay, total, drop_last)


def train_epoch(t: Trainer, data: TrainingData, s: TrainSettings, epoch: int, device: str, use_amp: bool, progress: bool) -> list[float]:
    """One pass over the train pairs; the loss of every batch."""
    data.train.set_epoch(epoch)
    loader = DataLoader(data.train, batch_size=s.batch_size, shuffle=True, generator=seed_epoch(s.seed, epoch), num_workers=s.num_workers,
                        collate_fn=data.train.collator(), drop_last=t.drop_last, worker_init_fn=_worker_init)
    t.model.train()
    losses = []
    bar = tqdm(loader, desc=f"train epoch {epoch + 1}/{s.epochs}", unit="batch", disable=not progress)
    for batch in bar:
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
            loss = info_nce(t.model(batch["a"], batch["a_mask"]), t.model(batch["b"], batch["b_mask"]), s.temperature, batch["track"])
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if s.grad_clip:
            torch.nn.utils.clip_grad_norm_(t.model.parameters(), s.grad_clip)
        t.optimizer.step()
        t.scheduler.step()
        if t.ema is not None:
            t.ema.update_parameters(t.model)
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


def validate(t: Trainer, probe: RetrievalProbe, device: str, use_amp: bool) -> float:
    scored = t.scored
    scored.eval()
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
        return probe.recall_at_1(lambda c, m: scored(c.to(device), m.to(device)))


def save_checkpoint(path: Path, t: Trainer, epoch: int, history: list[dict], data: TrainingData, emb_s: EmbedderSettings, s: TrainSettings) -> None:
    """The checkpoint carries the model config, so loading it never needs the training YAML."""
    with atomic_path(path) as tmp:
        torch.save({**t.state(), "epoch": epoch, "history": history, "embedder": asdict(emb_s), "training": asdict(s),
                    "num_quantizers": data.train.codes[0].shape[0], "codebook_size": data.codebook_size, "frame_rate": data.frame_rate,
                    "codec_version": data.codec_version}, tmp)


def train(tokens_root: Path, splits_dir: Path, run_id: str, emb_s: EmbedderSettings, s: TrainSettings, *, device: str, resume: bool = False,
          run_config: dict | None = None, url: str | None = None, progress: bool = True, on_epoch_end: Callable[[int], None] | None = None) -> dict:
    """Train (or, with ``resume``, continue from its last checkpoint) the token embedder of ``run_id``; returns the summary.

    The step's `runs` row (kind ``train``) points to ``run_id`` as its parent; metric rows are keyed by ``run_id``. A resumed run
    whose last epoch is done already returns its summary (:func:`pipeline.train.loop.finished`)."""
    done = finished(paths.embedder_checkpoint(run_id), paths.embedder_summary(run_id), s.epochs, f"train: {run_id}: embedder") if resume else None
    if done:
        return done
    data = load_data(tokens_root, splits_dir, s, emb_s.max_frames, url)
    t = build_trainer(data, emb_s, s, device)
    ckpt_path = paths.embedder_checkpoint(run_id)
    history, start_epoch = resume_from(ckpt_path, t, resume, device, f"train: {run_id}")
    use_amp = s.amp and device.startswith("cuda")
    step_config = {**(run_config or {}), "tokens_root": str(tokens_root), "splits_dir": str(splits_dir), "device": device, "resume": resume,
                   "train_tracks": len(data.train.tracks), "val_tracks": len(data.val.tracks), "online_augmentation": data.online_augmentation,
                   "ema_decay": t.ema_decay, "steps": t.steps}
    with db.connect(url) as conn, db.recorded_run(conn, "train", step_config, parent_run_id=run_id) as step:
        db.ensure_run(conn, run_id, kind="train")
        for epoch in range(start_epoch, s.epochs):
            started = time.perf_counter()
            losses = train_epoch(t, data, s, epoch, device, use_amp, progress)
            train_seconds = time.perf_counter() - started
            recall = validate(t, data.probe, device, use_amp)
            row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_recall_at_1": recall, "lr": t.scheduler.get_last_lr()[0],
                   "seconds": time.perf_counter() - started, "clips_per_s": 2 * len(data.train) / train_seconds, "batch_losses": losses}
            history.append(row)
            save_checkpoint(ckpt_path, t, epoch, history, data, emb_s, s)
            plot_contrastive_training(history, paths.training_curve(run_id),
                                      f"embedder {run_id}: {len(data.train.tracks)} train / {len(data.val.tracks)} val tracks")
            end_epoch(conn, run_id, "embedder", row, s.epochs, "clips_per_s", "clips", "train", on_epoch_end)
        summary = {"run_id": run_id, "checkpoint": str(ckpt_path), "device": device, "epochs": s.epochs, "history": history,
                   "train_tracks": len(data.train.tracks), "val_tracks": len(data.val.tracks), "online_augmentation": data.online_augmentation}
        return finish(conn, step, summary, paths.embedder_summary(run_id), stage="train", speed="clips_per_s", start_epoch=start_epoch,
                      label="embedder")
