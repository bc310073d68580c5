"""Query sets: clips cut at seeded random offsets from the query split's tracks, each under every set of the query plan.

A plan (configs/eval.yaml ``queries.plans``) names its query lengths and its sets, name -> degradation spec
(:mod:`pipeline.audio.degrade`). A query set is named ``<length>s/<set name>`` (``5s/pink0db``). The clean clip of a
(track, length, j) is the same under every set, so the sets differ only by the degradation; a set's clip is degraded with
a generator seeded by (seed, set name, track, offset), so a set gives the same audio in every run.

Clips are cut from each track's original source file (``tracks.source_uri``), decoded the way ``cloudtune search``
decodes a user's clip (``audio_io.load``: any format ingest reads, downmixed, resampled), at the file's own level:
not from the catalog's canonical audio, which ingest already normalized. Only when the source is gone is the
canonical audio used, and each such clip says so (``Clip.from_source``). After its degradation every query is
brought to the catalog level (``audio_io.query_level``), as search does.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline.audio import io as audio_io
from pipeline.audio.degrade import Degradation, apply, load_background, split_plan
from pipeline.config import QuerySettings
from pipeline.embed.catalog import Track, read_track


@dataclass
class Clip:
    track_id: str
    offset_s: float
    wave: np.ndarray
    from_source: bool = True  # False: cut from the canonical audio because the source file is gone


def read_source(track: Track, sample_rate: int) -> tuple[np.ndarray, bool]:
    """The track's source file decoded like a search query (mono at ``sample_rate``, its own level), or its canonical
    audio when the source is no longer there; (wave, from_source)."""
    path = audio_io.uri_to_path(track.source_uri)
    if path is not None and path.is_file():
        try:
            return audio_io.load(path, sr=sample_rate)[0], True
        except (sf.LibsndfileError, RuntimeError):
            pass  # changed or broken since ingest: the canonical copy is what is left
    return read_track(track, sample_rate), False


@dataclass
class QueryPlan:
    """The plan a run evaluates, ready to run: its lengths, the sets that can run here (name -> degradation, in the configured
    order), the sets skipped (name -> reason) and the background recordings the sets draw from."""

    name: str
    lengths_s: tuple[float, ...]
    sets: dict[str, Degradation]
    skipped: dict[str, str] = field(default_factory=dict)
    background: list[np.ndarray] = field(default_factory=list)

    def specs(self) -> dict[str, str]:
        return {name: d.spec for name, d in self.sets.items()}


def query_plan(s: QuerySettings, background_dir: str | Path | None, sample_rate: int) -> QueryPlan:
    """The selected plan of ``s`` (``s.plan``), split into runnable and skipped sets (a set with background sound is skipped
    when ``background_dir`` is missing or empty, one that cannot run at ``sample_rate`` too: :func:`split_plan`); the background
    recordings loaded at ``sample_rate`` when a set needs them."""
    plan = s.query_plan
    sets, skipped = split_plan(plan.sets, background_dir, sample_rate)
    background = load_background(background_dir, sample_rate) if any(d.needs_background for d in sets.values()) else []
    return QueryPlan(s.plan, tuple(plan.lengths_s), sets, skipped, background)


def _rng(*keys) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(str(k).encode()) for k in keys])


def clean_clips(tracks: list[Track], lengths_s: Sequence[float], s: QuerySettings, sample_rate: int) -> dict[float, list[Clip]]:
    """For each query length, ``per_track`` clips per track at seeded offsets (the same for every embedder and run).
    Each track's audio is read once for all lengths."""
    out: dict[float, list[Clip]] = {length: [] for length in lengths_s}
    for t in tracks:
        wave, from_source = read_source(t, sample_rate)
        for length_s in lengths_s:
            n = round(length_s * sample_rate)
            if len(wave) < n:
                continue  # shorter than the query length: no clip of this length from this track
            for j in range(s.per_track):
                start = int(_rng(s.seed, t.track_id, length_s, j).integers(0, len(wave) - n + 1))
                out[length_s].append(Clip(t.track_id, start / sample_rate, wave[start : start + n].copy(), from_source))
    return out


def degrade(clips: list[Clip], name: str, degradation: Degradation | str, seed: int, sample_rate: int,
            background: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """Every clip under set ``name``'s degradation (a Degradation or its spec), each with its own seeded generator."""
    return [apply(c.wave, sample_rate, degradation, _rng(seed, name, c.track_id, c.offset_s), background) for c in clips]
