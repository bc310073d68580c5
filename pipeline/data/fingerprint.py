"""Training data of the fingerprint embedder: the split tracks' audio, anchor/positive segment pairs and the val probe.

- :func:`load_split_audio` reads the tracks of one split list (runs/<run_id>/splits/<split>.txt; only the track ids in it are
  used, never the token files it names) from their canonical audio, resampled to the model's rate; for the train split also
  every track of ``fingerprint_training.train_catalogs`` (:func:`catalog_track_ids`).
- :class:`SegmentPairs`: one item per grid segment of the train tracks (every ``hop_s``): the clean segment (the anchor, as the
  catalog holds it) and a degraded copy cut up to ``max_shift`` hops away (the positive, as a query meets it); as waves, or as
  the model's log-mel when given its front end (CPU training: the DataLoader workers compute it beside the model step).
- :class:`SegmentProbe`: val Recall@1 of single augmented segments against every val segment, with fixed queries.
- :func:`calibration_segments`: seeded segments, half of them noisy, on which an int8 export is calibrated and checked.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import select
from torch.utils.data import Dataset
from tqdm import tqdm

from pipeline import paths
from pipeline.audio import degrade
from pipeline.audio import io as audio_io
from pipeline.audio.augment import Augmenter
from pipeline.data.splits import split_track_ids
from pipeline.store import db
from pipeline.store.tables import tracks


def catalog_track_ids(catalogs: tuple[str, ...], splits_dir: Path, url: str | None = None) -> list[str]:
    """Every track of ``catalogs`` (training music beside a run's train split); a ValueError when one has no tracks or holds a
    track of the run's val or test split (it would be trained on and then evaluated)."""
    if not catalogs:
        return []
    with db.connect(url) as conn:
        rows = conn.execute(select(tracks.c.track_id, tracks.c.catalog).where(tracks.c.catalog.in_(catalogs))).all()
    for name in catalogs:
        if not any(r.catalog == name for r in rows):
            raise ValueError(f"fingerprint_training.train_catalogs: catalog {name!r} has no tracks in the metrics DB")
    ids = {r.track_id for r in rows}
    for split in ("val", "test"):
        held_out = ids & set(split_track_ids(splits_dir, split))
        if held_out:
            raise ValueError(f"fingerprint_training.train_catalogs: {len(held_out)} of their tracks (e.g. {min(held_out)}) are in the "
                             f"{split} split of {splits_dir}: a track is either trained on or evaluated, never both")
    return sorted(ids)


def load_split_audio(splits_dir: Path, split: str, sr: int, *, max_hours: float | None = None, seed: int = 0, url: str | None = None,
                     progress: bool = True, extra_ids: list[str] | None = None) -> tuple[list[str], list[np.ndarray]]:
    """(track ids, mono float32 waves at ``sr``) of one split and the tracks ``extra_ids`` (:func:`catalog_track_ids`); a seeded
    sample of them when they hold more than ``max_hours``."""
    ids = sorted(set(split_track_ids(splits_dir, split)) | set(extra_ids or ()))
    with db.connect(url) as conn:
        rows = conn.execute(select(tracks.c.track_id, tracks.c.audio_path, tracks.c.duration_s).where(tracks.c.track_id.in_(ids))).all()
    rows = sorted(rows, key=lambda r: r.track_id)
    if not rows:
        raise ValueError(f"{paths.split_list(splits_dir, split)}: none of its {len(ids)} tracks is in the metrics DB's tracks table")
    if max_hours is not None and sum(r.duration_s for r in rows) > max_hours * 3600:
        order = np.random.default_rng([seed, 31]).permutation(len(rows))
        keep, total = [], 0.0
        for i in order:
            if total >= max_hours * 3600:
                break
            keep.append(rows[i])
            total += rows[i].duration_s
        rows = sorted(keep, key=lambda r: r.track_id)
    waves = []
    for r in tqdm(rows, desc=f"load {split} audio", unit="track", disable=not progress):
        wave, file_sr = audio_io.load_canonical(paths.canonical_audio(r.audio_path))
        waves.append(audio_io.resample(wave, file_sr, sr))
    return [r.track_id for r in rows], waves


def grid(waves: list[np.ndarray], n: int, hop: int) -> np.ndarray:
    """[segments, 2] (track, start sample) of every ``n``-sample segment every ``hop`` samples (a track shorter than ``n``: none)."""
    return np.array([(t, a) for t, w in enumerate(waves) for a in range(0, len(w) - n + 1, hop)], dtype=np.int64).reshape(-1, 2)


def _window(wave: np.ndarray, center: int, size: int) -> np.ndarray:
    """``size`` samples of ``wave`` centred on ``center``, zero-padded past either end."""
    a = center - size // 2
    out = np.zeros(size, np.float32)
    lo, hi = max(0, a), min(len(wave), a + size)
    if hi > lo:
        out[lo - a : hi - a] = wave[lo:hi]
    return out


class SegmentPairs(Dataset):
    """Item k: (anchor, positive, track, start) for grid segment k; draws depend on (seed, epoch, k) only. Anchor and positive
    are float32 [n] waves, or with ``front`` (a waves [B, n] -> log-mel [B, 1, bands, frames] module without weights, the
    model's :class:`pipeline.models.fingerprint.LogMelFrontEnd`) their log-mels [1, bands, frames]."""

    def __init__(self, waves: list[np.ndarray], n: int, hop: int, max_shift: float, augmenter: Augmenter, seed: int,
                 front: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.waves, self.n, self.hop, self.max_shift, self.augment, self.seed = waves, n, hop, max_shift, augmenter, seed
        self.front = front
        self.items = grid(waves, n, hop)
        if not len(self.items):
            raise ValueError(f"no train track is as long as one segment ({n} samples)")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int):
        t, a = (int(v) for v in self.items[k])
        rng = np.random.default_rng([self.seed, self.epoch, k])
        wave = self.waves[t]
        anchor = wave[a : a + self.n]
        shift = int(round(rng.uniform(-self.max_shift, self.max_shift) * self.hop))
        positive = self.augment(_window(wave, a + shift + self.n // 2, self.augment.margin(self.n)), self.n, rng)
        anchor, positive = torch.from_numpy(np.ascontiguousarray(anchor)), torch.from_numpy(positive)
        if self.front is not None:  # one segment at a time: on one core faster than a batch (256 in 94 against 152 ms, measured)
            with torch.no_grad():
                anchor, positive = self.front(anchor[None])[0], self.front(positive[None])[0]
        return anchor, positive, t, a


class SegmentProbe:
    """Fixed val queries: ``per_track`` augmented segments of each val track at seeded offsets; the gallery: every val segment.
    Recall@1: the share of queries whose nearest gallery segment is of their own track."""

    def __init__(self, waves: list[np.ndarray], n: int, hop: int, per_track: int, augmenter: Augmenter, seed: int):
        self.gallery = grid(waves, n, hop)
        self.gallery_waves = [waves[t][a : a + n] for t, a in self.gallery]
        self.queries, self.query_track = [], []
        for t, wave in enumerate(waves):
            if len(wave) < n:
                continue
            for j in range(per_track):
                rng = np.random.default_rng([seed, 7919, t, j])
                center = int(rng.integers(n // 2, len(wave) - n // 2 + 1))
                self.queries.append(augmenter(_window(wave, center, augmenter.margin(n)), n, rng))
                self.query_track.append(t)

    @torch.no_grad()
    def recall_at_1(self, embed, batch_size: int = 512) -> float:
        """``embed(float32 [B, n]) -> [B, dim]`` unit vectors."""
        if not self.queries:
            return float("nan")

        def vectors(waves):
            return torch.cat([embed(torch.from_numpy(np.stack(waves[i : i + batch_size]))).float().cpu()
                              for i in range(0, len(waves), batch_size)])

        nearest = (vectors(self.queries) @ vectors(self.gallery_waves).T).argmax(dim=1).numpy()
        return float(np.mean(self.gallery[nearest, 0] == np.asarray(self.query_track)))


def calibration_segments(waves: list[np.ndarray], n: int, size: int, seed: int, snr_db: tuple[float, float] = (-10.0, 20.0)) -> np.ndarray:
    """float32 [n, size]: seeded segments of ``waves`` (a wave drawn in proportion to its length), every second one under white,
    pink or brown noise at an SNR in ``snr_db``: the inputs an int8 export's activation ranges are set on, clean as the catalog
    and noisy as queries. A ValueError when no wave is one segment long."""
    usable = [w for w in waves if len(w) >= size]
    if not usable:
        raise ValueError(f"calibration: none of the {len(waves)} tracks is one segment ({size} samples) long")
    rng = np.random.default_rng([seed, 77])
    room = np.array([len(w) - size + 1 for w in usable], np.float64)
    out = np.empty((n, size), np.float32)
    for i, t in enumerate(rng.choice(len(usable), n, p=room / room.sum())):
        start = int(rng.integers(0, room[t]))
        segment = usable[t][start : start + size]
        out[i] = degrade.add_noise(segment, float(rng.uniform(*snr_db)), str(rng.choice(degrade.NOISE_COLORS)), rng) if i % 2 else segment
    return out
