"""Contrastive training of the TokenEmbedder: InfoNCE with in-batch negatives, AdamW, warmup + cosine.

    $CLOUDTUNE_HOME/runs/<run_id>/splits/{train,val,test}.txt   (built when missing)
    $CLOUDTUNE_HOME/runs/<run_id>/models/embedder.pt            checkpoint after every epoch (atomic)
    $CLOUDTUNE_HOME/runs/<run_id>/models/embedder.json          settings and per-epoch history
    $CLOUDTUNE_HOME/runs/<run_id>/models/training_curve.png     loss per batch and epoch, val Recall@1 per epoch (after every epoch)

Every epoch starts from seeds derived from (seed, epoch), so a run resumed from its last checkpoint
after a kill ends with exactly the weights of an uninterrupted run (on CPU).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import select
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline import config, paths
from pipeline.config import TrainSettings
from pipeline.data.dataset import RetrievalProbe, TokenPairDataset, TrackSource
from pipeline.devices import resolve_device
from pipeline.fsutil import atomic_path, write_json
from pipeline.models.token_embedder import TokenEmbedder, info_nce
from pipeline.plots import plot_contrastive_training
from pipeline.store import db
from pipeline.store.tables import run_metrics, tracks, training_epochs
from pipeline.tokenize.catalog import find_codec
from pipeline.tokenize.files import load_tokens


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


def lr_lambda(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _seed_epoch(seed: int, epoch: int) -> torch.Generator:
    """Seed dropout and shuffling from (seed, epoch) alone, so a resumed epoch replays exactly."""
    torch.manual_seed(seed * 100_003 + epoch)
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def _worker_init(_worker_id: int) -> None:
    """A forked DataLoader worker uses FAISS (the rvq codec in the collator) single-threaded: FAISS's OpenMP pool does not survive
    fork, and when the parent process had used FAISS already (codec training in the same process, e.g. an Airflow dag.test() run),
    the worker's first search never returned."""
    import faiss

    faiss.omp_set_num_threads(1)


def train_embedder(tokens_root: str | Path, splits_dir: str | Path | None = None, *, run_id: str | None = None, config_path: str | Path | None = None,
                   device: str = "auto", epochs: int | None = None, resume: bool = False, url: str | None = None, progress: bool = True,
                   on_epoch_end: Callable[[int], None] | None = None) -> dict:
    """Train (or, with ``resume``, continue) the embedder of ``run_id``. Returns the run's summary."""
    emb_s, train_s, split_s, raw_cfg = config.load_train(config_path)
    if epochs is not None:
        train_s = TrainSettings(**{**asdict(train_s), "epochs": epochs})
    tokens_root = Path(tokens_root)
    device = resolve_device(device)
    run_id = run_id or db.new_run_id("train")
    splits_dir = Path(splits_dir) if splits_dir else paths.splits_dir(run_id)
    if not (splits_dir / "train.txt").exists():
        from pipeline.data.splits import build_splits

        build_splits(tokens_root, splits_dir, split_s.val_ratio, split_s.test_ratio, split_s.seed, split_s.group_by, url=url, progress=progress)
    train_tracks = read_split(splits_dir, "train", tokens_root, url)
    val_tracks = read_split(splits_dir, "val", tokens_root, url)
    _, meta = load_tokens(train_tracks[0].token_files[0])
    codebook_size, frame_rate = int(meta["codebook_size"]), float(meta["frame_rate"])
    rvq = find_codec(meta["codec_version"]) if meta["backend"] == "rvq" else None
    codec = rvq if train_s.augment_audio else None
    if train_s.augment_audio and codec is None:
        print(f"train: no online audio augmentation (backend {meta['backend']}, codec {meta['codec_version']} not here): token views only",
              file=sys.stderr)
    train_ds = TokenPairDataset(train_tracks, train_s, codebook_size, frame_rate, codec)
    val_ds = TokenPairDataset(val_tracks, train_s, codebook_size, frame_rate, codec)
    if train_ds.clip_frames > emb_s.max_frames:
        raise ValueError(f"training.clip_seconds {train_s.clip_seconds:g} gives {train_ds.clip_frames} frames > embedder.max_frames {emb_s.max_frames}")
    probe = RetrievalProbe(val_ds, train_s.val_queries_per_track, train_s.seed, distractors=train_ds.codes)  # the train tracks are in the catalog too
    num_quantizers = train_ds.codes[0].shape[0]

    torch.manual_seed(train_s.seed)
    model = TokenEmbedder(num_quantizers, codebook_size, emb_s)
    if emb_s.init_from_codebooks and rvq is not None:
        model.init_from_codebooks(rvq.codebooks, train_s.seed)
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_s.lr, weight_decay=train_s.weight_decay)
    drop_last = len(train_ds) > train_s.batch_size  # a last, smaller batch would weaken in-batch negatives
    steps_per_epoch = len(train_ds) // train_s.batch_size if drop_last else 1
    total = steps_per_epoch * train_s.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_lambda, total=total, warmup=max(1, int(train_s.warmup_ratio * total))))
    # An exponential moving average of the weights (training.ema_decay, 0 = off) is what validation and search use:
    # it smooths the step-to-step noise of a small-batch contrastive run. Its horizon, 1 / (1 - decay) steps, never
    # spans more than a quarter of the run, so a short run (the demo's 2 epochs) is not dragged back to its first steps.
    ema_decay = max(0.0, min(train_s.ema_decay, 1 - 4 / total)) if train_s.ema_decay else 0.0
    ema = (torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema_decay))
           if train_s.ema_decay else None)
    ckpt_path = paths.embedder_checkpoint(run_id)
    history: list[dict] = []
    start_epoch = 0
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ema is not None and "ema" in ckpt:
            ema.load_state_dict(ckpt["ema"])
        history, start_epoch = ckpt["history"], ckpt["epoch"] + 1
        print(f"train: resuming {run_id} after epoch {ckpt['epoch'] + 1}", file=sys.stderr)
    elif resume:
        print(f"train: --resume but no checkpoint at {ckpt_path}: starting from scratch", file=sys.stderr)

    use_amp = train_s.amp and device.startswith("cuda")
    run_config = {"tokens_root": str(tokens_root), "splits_dir": str(splits_dir), "device": device, "config": raw_cfg,
                  "train_tracks": len(train_tracks), "val_tracks": len(val_tracks), "online_augmentation": codec is not None, "resume": resume,
                  "ema_decay": ema_decay, "steps": total}
    with db.connect(url) as conn, db.recorded_run(conn, "train", run_config, run_id) as run:
        clips_per_s = []
        for epoch in range(start_epoch, train_s.epochs):
            started = time.perf_counter()
            generator = _seed_epoch(train_s.seed, epoch)
            train_ds.set_epoch(epoch)
            loader = DataLoader(train_ds, batch_size=train_s.batch_size, shuffle=True, generator=generator, num_workers=train_s.num_workers,
                                collate_fn=train_ds.collator(), drop_last=drop_last, worker_init_fn=_worker_init)
            model.train()
            losses = []
            bar = tqdm(loader, desc=f"train epoch {epoch + 1}/{train_s.epochs}", unit="batch", disable=not progress)
            for batch in bar:
                batch = {k: v.to(device) for k, v in batch.items()}
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
                    za = model(batch["a"], batch["a_mask"])
                    zb = model(batch["b"], batch["b_mask"])
                    loss = info_nce(za, zb, train_s.temperature, batch["track"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if train_s.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), train_s.grad_clip)
                optimizer.step()
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(model)
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
            train_seconds = time.perf_counter() - started
            scored = ema.module if ema is not None else model
            scored.eval()
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
                recall = probe.recall_at_1(lambda c, m, scored=scored: scored(c.to(device), m.to(device)))
            seconds = time.perf_counter() - started
            row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_recall_at_1": recall, "lr": scheduler.get_last_lr()[0],
                   "seconds": seconds, "clips_per_s": 2 * len(train_ds) / train_seconds, "batch_losses": losses}
            history.append(row)
            clips_per_s.append(row["clips_per_s"])
            with atomic_path(ckpt_path) as tmp:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch,
                            **({"ema": ema.state_dict(), "ema_model": ema.module.state_dict()} if ema is not None else {}),
                            "history": history, "embedder": asdict(emb_s), "training": asdict(train_s), "num_quantizers": num_quantizers,
                            "codebook_size": codebook_size, "frame_rate": frame_rate, "codec_version": meta["codec_version"]}, tmp)
            plot_contrastive_training(history, paths.training_curve(run_id),
                                      f"embedder {run_id}: {len(train_tracks)} train / {len(val_tracks)} val tracks")
            db.upsert(conn, training_epochs, [{"run_id": run.run_id, "model": "embedder", "epoch": epoch + 1, "train_loss": row["train_loss"],
                                               "val_loss": None, "val_recall_at_1": recall, "lr": row["lr"], "seconds": seconds,
                                               "recorded_at": db.utcnow()}])
            conn.commit()
            tqdm.write(f"train: epoch {epoch + 1}/{train_s.epochs} loss {row['train_loss']:.4f} val R@1 {recall:.3f} lr {row['lr']:.2e} "
                       f"{seconds:.1f} s ({row['clips_per_s']:.0f} clips/s)", file=sys.stderr)
            if on_epoch_end:
                on_epoch_end(epoch + 1)
        summary = {"run_id": run.run_id, "checkpoint": str(ckpt_path), "device": device, "epochs": train_s.epochs, "history": history,
                   "train_tracks": len(train_tracks), "val_tracks": len(val_tracks), "online_augmentation": codec is not None}
        write_json(paths.embedder_summary(run_id), summary)
        if clips_per_s:
            db.upsert(conn, run_metrics, [{"run_id": run.run_id, "stage": "train", "metric": "clips_per_s", "k": 0,
                                           "value": float(np.mean(clips_per_s)), "recorded_at": db.utcnow()}])
            conn.commit()
        if history:
            run.message = f"embedder: {len(history)} epochs, loss {history[-1]['train_loss']:.4f}, val R@1 {history[-1]['val_recall_at_1']:.3f}"
    return summary
