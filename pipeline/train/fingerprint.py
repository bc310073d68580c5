"""Contrastive training of the fingerprint model: NT-Xent over anchor/positive segment pairs with in-batch negatives.

Each step takes ``batch_size`` grid segments of the train tracks (the anchors, clean, as the catalog holds them) and a degraded
copy of each cut up to ``max_shift`` hops away (the positives, :mod:`pipeline.audio.augment`); every other segment of the batch, anchor or
positive, is a negative (2B - 2 per positive), except segments of the same track that overlap the pair (not negatives at all).
A positive's log-mel may lose a band of frames and of mel bands (SpecAugment). AdamW, linear warmup then cosine decay.

Writes (paths from :mod:`pipeline.paths`)::

    runs/<run_id>/models/fingerprint.pt             checkpoint after every epoch (atomic)
    runs/<run_id>/models/fingerprint.json           settings and per-epoch history
    runs/<run_id>/models/fingerprint_curve.png      loss per batch and epoch, val Recall@1 per epoch

and one ``training_epochs`` row (model ``fingerprint``) per epoch. Every epoch's draws derive from (seed, epoch), so a run
resumed after a kill ends with the weights of an uninterrupted one (on CPU).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline import paths
from pipeline.audio.augment import Augmenter
from pipeline.config import AugmentSettings, FingerprintSettings, FingerprintTrainSettings
from pipeline.data.fingerprint import SegmentPairs, SegmentProbe, catalog_track_ids, load_split_audio
from pipeline.devices import torch_threads
from pipeline.fsutil import atomic_path
from pipeline.models.fingerprint import FingerprintNet, LogMelFrontEnd, save_fingerprint
from pipeline.plots import plot_contrastive_training
from pipeline.store import db
from pipeline.train.loop import end_epoch, finish, finished, lr_lambda, resume_from, seed_epoch


def nt_xent(a: torch.Tensor, p: torch.Tensor, temperature: float, same: torch.Tensor | None = None) -> torch.Tensor:
    """NT-Xent of unit vectors a[i] <-> p[i] against all other 2B - 2 rows; ``same`` [B, B] bool marks pairs (i, j), i != j, that
    are not negatives of each other (overlapping segments of one track): they are left out of the denominators."""
    b = a.shape[0]
    z = torch.cat([a, p]).float()
    logits = z @ z.T / temperature
    eye = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    drop = eye.clone()
    if same is not None:
        same = same & ~torch.eye(b, dtype=torch.bool, device=z.device)
        drop |= same.repeat(2, 2)
    logits = logits.masked_fill(drop, float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return F.cross_entropy(logits, target)


def spec_mask(logmel: torch.Tensor, s: FingerprintTrainSettings, g: torch.Generator) -> torch.Tensor:
    """One time mask (up to spec_mask_frames) and one band mask (up to spec_mask_bands) on each row with probability spec_mask_p;
    masked bins take the row's floor (silence after the front end's normalization)."""
    b, _, bands, frames = logmel.shape
    out = logmel.clone()
    floor = logmel.amin(dim=(1, 2, 3))
    pick = torch.rand(b, generator=g) < s.spec_mask_p
    for i in torch.nonzero(pick).flatten().tolist():
        w = int(torch.randint(0, s.spec_mask_frames + 1, (1,), generator=g))
        t0 = int(torch.randint(0, max(1, frames - w + 1), (1,), generator=g))
        h = int(torch.randint(0, s.spec_mask_bands + 1, (1,), generator=g))
        f0 = int(torch.randint(0, max(1, bands - h + 1), (1,), generator=g))
        out[i, :, :, t0 : t0 + w] = floor[i]
        out[i, :, f0 : f0 + h, :] = floor[i]
    return out


def channels_last(logmel: torch.Tensor) -> torch.Tensor:
    """The log-mel in the memory layout the training model's convolutions are in (:class:`FingerprintTrainer`): measured on the
    2-core CPU (AVX2, no AVX-512), forward, backward and step of a 256-pair batch 1.63-1.88 s contiguous, 1.14-1.18 s so
    (bench/RESULTS.md "Fingerprint training"). Training only: inference and the ONNX export keep the plain layout."""
    return logmel.contiguous(memory_format=torch.channels_last)


class FingerprintTrainer:
    """Model, optimizer and schedule: everything a checkpoint restores to resume exactly."""

    def __init__(self, model_s: FingerprintSettings, s: FingerprintTrainSettings, steps: int, device: str):
        torch.manual_seed(s.seed)
        self.model = FingerprintNet(model_s).to(device)
        self.model.blocks.to(memory_format=torch.channels_last)  # with channels_last inputs: a step 1.45x faster on the 2-core CPU
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, partial(lr_lambda, total=steps, warmup=max(1, int(s.warmup_ratio * steps))))
        self.steps = steps

    def state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def restore(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])


def train_epoch(t: FingerprintTrainer, data: SegmentPairs, s: FingerprintTrainSettings, epoch: int, device: str, progress: bool) -> list[float]:
    data.set_epoch(epoch)
    g = seed_epoch(s.seed, epoch)
    batch_size = min(s.batch_size, len(data))
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=g, num_workers=s.num_workers, drop_last=True)
    use_amp = s.amp and device.startswith("cuda")
    overlap = data.n  # segments of one track closer than a segment length share audio: not negatives
    t.model.train()
    losses = []
    bar = tqdm(loader, desc=f"fingerprint epoch {epoch + 1}/{s.epochs}", unit="batch", disable=not progress)
    for anchor, positive, track, start in bar:
        anchor, positive = anchor.to(device), positive.to(device)
        if data.front is None:  # waves: the front end runs here, batched on the device (on the CPU the workers hand log-mels)
            anchor, positive = t.model.front(anchor), t.model.front(positive)
        same = (track[:, None] == track[None, :]) & ((start[:, None] - start[None, :]).abs() < overlap)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
            za = t.model.encode(channels_last(anchor))
            zp = t.model.encode(channels_last(spec_mask(positive, s, g).to(device) if s.spec_mask_p > 0 else positive))
            loss = nt_xent(za, zp, s.temperature, same.to(device))
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if s.grad_clip:
            torch.nn.utils.clip_grad_norm_(t.model.parameters(), s.grad_clip)
        t.optimizer.step()
        t.scheduler.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


def step_threads(device: str, workers: int) -> int:
    """torch's CPU threads while an epoch trains: the cores the DataLoader workers leave (at least 1), so augmentation and the
    model step run side by side instead of taking turns on oversubscribed cores; 0 (unchanged) on CUDA or without workers.
    On the 2-core AVX2 CPU, 1 thread beside 1 worker trained an epoch of the default model in 70 s, 2 threads in 95 s
    (bench/RESULTS.md "A cheaper training step")."""
    if device.startswith("cuda") or workers <= 0:
        return 0
    return max(1, torch.get_num_threads() - workers)


def validate(t: FingerprintTrainer, probe: SegmentProbe, device: str) -> float:
    t.model.eval()
    return probe.recall_at_1(lambda w: t.model(w.to(device)))


def train(splits_dir: Path, run_id: str, model_s: FingerprintSettings, s: FingerprintTrainSettings, aug_s: AugmentSettings, *, device: str,
          root: Path, resume: bool = False, run_config: dict | None = None, url: str | None = None, progress: bool = True,
          on_epoch_end: Callable[[int], None] | None = None) -> dict:
    """Train (or, with ``resume``, continue from its last checkpoint) the fingerprint model of ``run_id`` on the train split of
    ``splits_dir``; returns the summary. ``root``: what a relative ``augment.background_dir`` is relative to. A resumed run whose
    last epoch is done already returns its summary (:func:`pipeline.train.loop.finished`)."""
    done = finished(paths.fingerprint_checkpoint(run_id), paths.fingerprint_summary(run_id), s.epochs, f"fingerprint: {run_id}") if resume else None
    if done:
        return done
    sr = model_s.sample_rate
    n, hop = round(model_s.segment_s * sr), round(model_s.hop_s * sr)
    extra_ids = catalog_track_ids(s.train_catalogs, splits_dir, url)
    train_ids, train_waves = load_split_audio(splits_dir, "train", sr, max_hours=s.max_train_hours, seed=s.seed, url=url, progress=progress,
                                              extra_ids=extra_ids)
    val_ids, val_waves = load_split_audio(splits_dir, "val", sr, url=url, progress=progress)
    started = time.perf_counter()
    augmenter = Augmenter.from_dir(aug_s, sr, root, seed=s.seed)
    print(f"fingerprint: {len(augmenter.rooms)} rooms simulated, {len(augmenter.background)} background recordings "
          f"({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    # on the CPU the workers make the log-mels too: the model step is the bottleneck there, a worker has time to spare
    data = SegmentPairs(train_waves, n, hop, s.max_shift, augmenter, s.seed, front=None if device.startswith("cuda") else LogMelFrontEnd(model_s))
    probe = SegmentProbe(val_waves, n, hop, s.val_queries_per_track, augmenter, s.seed)
    steps = max(1, len(data) // min(s.batch_size, len(data))) * s.epochs
    t = FingerprintTrainer(model_s, s, steps, device)
    ckpt_path = paths.fingerprint_checkpoint(run_id)
    history, start_epoch = resume_from(ckpt_path, t, resume, device, f"fingerprint: {run_id}")
    hours = sum(len(w) for w in train_waves) / sr / 3600
    step_config = {**(run_config or {}), "splits_dir": str(splits_dir), "device": device, "resume": resume, "train_tracks": len(train_ids),
                   "train_catalog_tracks": len(extra_ids), "train_hours": hours, "val_tracks": len(val_ids), "pairs_per_epoch": len(data), "steps": steps,
                   "background_recordings": len(augmenter.background)}
    with db.connect(url) as conn, db.recorded_run(conn, "train", step_config, parent_run_id=run_id) as step:
        db.ensure_run(conn, run_id, kind="train")
        for epoch in range(start_epoch, s.epochs):
            began = time.perf_counter()
            with torch_threads(step_threads(device, s.num_workers)):
                losses = train_epoch(t, data, s, epoch, device, progress)
            train_seconds = time.perf_counter() - began
            recall = validate(t, probe, device)
            row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan"), "val_recall_at_1": recall,
                   "lr": t.scheduler.get_last_lr()[0], "seconds": time.perf_counter() - began, "pairs_per_s": len(losses) * min(s.batch_size, len(data))
                   / max(train_seconds, 1e-9), "batch_losses": losses}
            history.append(row)
            with atomic_path(ckpt_path) as tmp:
                save_fingerprint(tmp, t.model, **t.state(), epoch=epoch, history=history, training=asdict(s), augment=asdict(aug_s),
                                 train_tracks=train_ids)
            plot_contrastive_training(history, paths.fingerprint_curve(run_id),
                                      f"fingerprint {run_id}: {len(train_ids)} train / {len(val_ids)} val tracks ({hours:.2f} h)")
            end_epoch(conn, run_id, "fingerprint", row, s.epochs, "pairs_per_s", "pairs", "fingerprint", on_epoch_end)
        summary = {"run_id": run_id, "checkpoint": str(ckpt_path), "device": device, "epochs": s.epochs, "history": history,
                   "train_tracks": len(train_ids), "train_hours": hours, "val_tracks": len(val_ids), "seconds": sum(h["seconds"] for h in history)}
        return finish(conn, step, summary, paths.fingerprint_summary(run_id), stage="train_fingerprint", speed="pairs_per_s",
                      start_epoch=start_epoch, label="fingerprint")
