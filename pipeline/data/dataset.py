"""TokenPairDataset: two augmented views of one track per item, and the collate that pads them.

A view is a random crop of 0.6-1.0 of the clip length from a random position. With an rvq codec
and the track's canonical audio at hand (cheap enough to run online), the crop is cut from the
audio, degraded (noise, filters, speed, reverb, gain) and tokenized; otherwise it is cut from the
stored tokens. Either way some frames are then replaced by the MASK id (token dropout).
Every random draw of item ``i`` in epoch ``e`` comes from a generator seeded with (seed, e, i), so
an epoch is reproducible whatever the worker count, which is what makes resumed training exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from pipeline.audio.degrade import apply, parse, random_degradation
from pipeline.config import TrainSettings
from pipeline.tokenize import mask_id, pad_id
from pipeline.tokenize.files import load_tokens


@dataclass(frozen=True)
class AudioView:
    """A degraded audio crop still to be tokenized (in the collator, together with the whole batch)."""

    wave: np.ndarray
    seed: int  # for its token dropout


@dataclass(frozen=True)
class TrackSource:
    track_id: str
    token_files: tuple[Path, ...]  # in chunk order
    audio_path: Path | None = None  # canonical FLAC, for online augmentation


def load_track_codes(files: tuple[Path, ...] | list[Path]) -> np.ndarray:
    """All chunks of a track, in chunk order, as one int64 [Q, T]."""
    parts = sorted((load_tokens(f) for f in files), key=lambda cm: cm[1].get("chunk_index", 0))
    return np.concatenate([c for c, _ in parts], axis=1)


class TokenPairDataset(Dataset):
    def __init__(self, tracks: list[TrackSource], settings: TrainSettings, codebook_size: int, frame_rate: float, codec=None):
        if not tracks:
            raise ValueError("TokenPairDataset: no tracks")
        self.tracks, self.settings, self.codebook_size, self.frame_rate = tracks, settings, codebook_size, frame_rate
        self.codes = [load_track_codes(t.token_files) for t in tracks]
        self.codec = codec if settings.augment_audio else None
        self.clip_frames = max(1, round(settings.clip_seconds * frame_rate))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.tracks) * self.settings.clips_per_track

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, int]:
        t = i % len(self.tracks)
        rng = np.random.default_rng([self.settings.seed, self.epoch, i])
        a, start = self.view(t, rng)
        b, _ = self.view(t, rng, near=start)
        return a, b, t

    def crop_frames(self, rng: np.random.Generator) -> int:
        return max(1, round(self.clip_frames * rng.uniform(self.settings.min_crop, 1.0)))

    def crop_start(self, track_frames: int, length: int, rng: np.random.Generator, near: int | None = None) -> int:
        """A random first frame for a crop of ``length``; with ``training.pair_window_s`` and ``near`` (the other view's
        start), within that many seconds of it (as close as the track's end allows), so the two views overlap or sit
        side by side in the track."""
        last = max(0, track_frames - length)
        lo, hi = 0, last
        if near is not None and self.settings.pair_window_s is not None:
            window = round(self.settings.pair_window_s * self.frame_rate)
            lo, hi = min(max(0, near - window), last), min(near + window, last)
        return int(rng.integers(lo, hi + 1))

    def view(self, t: int, rng: np.random.Generator, near: int | None = None) -> tuple[np.ndarray | AudioView, int]:
        """One view of track ``t`` and the frame it starts at."""
        length = self.crop_frames(rng)
        track = self.tracks[t]
        start = self.crop_start(self.codes[t].shape[1], length, rng, near)
        if self.codec is not None and track.audio_path is not None:
            wave = random_degradation(self.audio_crop(track.audio_path, start, length), self.codec.sample_rate, rng, self.settings.degrade_p)
            return AudioView(wave, int(rng.integers(2**31))), start
        codes = self.codes[t][:, start : start + length]
        return token_dropout(codes, self.settings.token_dropout, self.codebook_size, rng), start

    def audio_crop(self, path: Path, start: int, length: int) -> np.ndarray:
        """``length`` token frames of the track's canonical audio from token frame ``start``."""
        hop = self.codec.features.hop
        data, _ = sf.read(path, start=start * hop, frames=length * hop, dtype="int16")
        return data.astype(np.float32) * np.float32(1 / 32768)

    def collator(self) -> PairCollator:
        return PairCollator(self.codebook_size, self.codec, self.settings.token_dropout, self.clip_frames)


def token_dropout(codes: np.ndarray, p: float, codebook_size: int, rng: np.random.Generator) -> np.ndarray:
    """Replace each frame (all levels) with the MASK id with probability ``p``; at least one frame stays."""
    if p <= 0 or codes.shape[1] == 0:
        return codes
    drop = rng.random(codes.shape[1]) < p
    if drop.all():
        drop[rng.integers(codes.shape[1])] = False
    out = codes.copy()
    out[:, drop] = mask_id(codebook_size)
    return out


class PairCollator:
    """Batch of (view_a, view_b, track) -> padded tensors. Audio views of the whole batch are tokenized in one
    ``encode_batch`` call (one search per level instead of one per view), then get their token dropout."""

    def __init__(self, codebook_size: int, codec=None, token_dropout: float = 0.0, clip_frames: int | None = None):
        self.codebook_size, self.codec, self.token_dropout, self.clip_frames = codebook_size, codec, token_dropout, clip_frames

    def tokenize(self, views: list) -> list[np.ndarray]:
        audio = [i for i, v in enumerate(views) if isinstance(v, AudioView)]
        if audio:
            codes = self.codec.encode_batch([views[i].wave for i in audio], self.codec.sample_rate)
            views = list(views)
            for i, c in zip(audio, codes, strict=True):
                c = c[:, : self.clip_frames] if c.shape[1] else c
                views[i] = token_dropout(c, self.token_dropout, self.codebook_size, np.random.default_rng(views[i].seed))
        return views

    def __call__(self, batch: list[tuple]) -> dict[str, torch.Tensor]:
        """Pad both views to [B, Q, T_max] with the PAD id; masks [B, T_max] are True on real frames."""
        views = self.tokenize([x[0] for x in batch] + [x[1] for x in batch])
        a, a_mask = pad_codes(views[: len(batch)], self.codebook_size)
        b, b_mask = pad_codes(views[len(batch) :], self.codebook_size)
        return {"a": a, "a_mask": a_mask, "b": b, "b_mask": b_mask, "track": torch.tensor([x[2] for x in batch])}


def pad_codes(views: list[np.ndarray], codebook_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    q, t_max = views[0].shape[0], max(max(v.shape[1] for v in views), 1)
    out = torch.full((len(views), q, t_max), pad_id(codebook_size), dtype=torch.int64)
    mask = torch.zeros((len(views), t_max), dtype=torch.bool)
    for i, v in enumerate(views):
        out[i, :, : v.shape[1]] = torch.from_numpy(np.ascontiguousarray(v))
        mask[i, : v.shape[1]] = True
    return out, mask


class RetrievalProbe:
    """Fixed validation set for Recall@1: degraded query clips against the tracks' overlapping segments.

    The gallery is every val track cut into clip-long segments (hop: half a clip) from the stored tokens,
    plus, as in the evaluation's catalog, the segments of the ``distractors`` (the train tracks' codes): a
    query must find its own track among all of them. Queries come from the val tracks only: crops at seeded
    random offsets, degraded (when audio and an rvq codec are at hand) by the degradation specs of DEGRADATIONS in turn,
    the kinds of the evaluation's query sets (configs/eval.yaml queries.plans) without the real background sound: the
    val probe needs no fetched files. Ranking is by track: a track scores its best segment.
    """

    # white 10 dB, pink 0 dB, the telephone band, a 0.6 s room, 3 % faster, low-pass 3 kHz, -12 dB, clean (the eight named
    # query degradations it had before the evaluation's specs; "reverb" was a 0.6 s noise tail, now a simulated 0.6 s room)
    DEGRADATIONS = ("white:10", "pink:0", "telephone", "reverb:0.6", "speed:1.03", "lowpass:3000", "gain:-12", "clean")

    def __init__(self, dataset: TokenPairDataset, queries_per_track: int, seed: int = 0, distractors: list[np.ndarray] | None = None):
        self.ds = dataset
        clip = dataset.clip_frames
        self.gallery, self.gallery_track, self.queries, self.query_track = [], [], [], []
        self.n_tracks = len(dataset.codes) + len(distractors or [])
        for t, codes in enumerate([*dataset.codes, *(distractors or [])]):
            for s in range(0, max(1, codes.shape[1] - clip + 1), max(1, clip // 2)):
                self.gallery.append(codes[:, s : s + clip])
                self.gallery_track.append(t)
        for t, codes in enumerate(dataset.codes):
            for j in range(queries_per_track):
                rng = np.random.default_rng([seed, 7919, t, j])
                spec = self.DEGRADATIONS[(t + j) % len(self.DEGRADATIONS)]
                track = dataset.tracks[t]
                start = dataset.crop_start(codes.shape[1], clip, rng)
                if dataset.codec is not None and track.audio_path is not None:
                    wave = dataset.audio_crop(track.audio_path, start, clip)
                    q = AudioView(apply(wave, dataset.codec.sample_rate, parse(spec), rng), 0)
                else:
                    q = codes[:, start : start + clip]
                self.queries.append(q)
                self.query_track.append(t)
        self.queries = PairCollator(dataset.codebook_size, dataset.codec, 0.0, clip).tokenize(self.queries)

    @torch.no_grad()
    def recall_at_1(self, embed, batch_size: int = 256) -> float:
        """``embed(codes, mask) -> [N, D]``; the share of queries whose best track is their own. The gallery is embedded
        and scored one batch at a time, so memory stays at [queries, tracks] however large the catalog."""
        q = self._embed(embed, self.queries)
        per_track = torch.full((q.shape[0], self.n_tracks), float("-inf"))
        for i in range(0, len(self.gallery), batch_size):
            scores = q @ self._embed(embed, self.gallery[i : i + batch_size]).T  # [queries, segments of this batch]
            index = torch.tensor(self.gallery_track[i : i + batch_size]).expand(q.shape[0], -1)
            per_track = per_track.scatter_reduce(1, index, scores, reduce="amax")
        hits = per_track.argmax(1) == torch.tensor(self.query_track)
        return float(hits.float().mean())

    def _embed(self, embed, views, batch_size: int = 256):
        out = []
        for i in range(0, len(views), batch_size):
            codes, mask = pad_codes(views[i : i + batch_size], self.ds.codebook_size)
            out.append(embed(codes, mask).float().cpu())
        return torch.cat(out)
