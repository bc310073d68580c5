"""Query sets: clips cut at seeded random offsets from the query split's tracks, each under every named degradation.

A query set is named ``<length>s/<degradation>`` (``5s/pink0db``). The clean clip of a (track, length, j)
is the same under every degradation, so the sets differ only by the degradation.

Clips are cut from each track's original source file (``tracks.source_uri``), decoded the way ``cloudtune search``
decodes a user's clip (``audio_io.load``: any format ingest reads, downmixed, resampled), at the file's own level:
not from the catalog's canonical audio, which ingest already normalized. Only when the source is gone is the
canonical audio used, and each such clip says so (``Clip.from_source``). After its degradation every query is
brought to the catalog level (``audio_io.query_level``), as search does.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from pipeline.audio import io as audio_io
from pipeline.audio.degrade import QUERY_DEGRADATIONS
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


def set_name(length_s: float, degradation: str) -> str:
    return f"{length_s:g}s/{degradation}"


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


def degrade(clips: list[Clip], degradation: str, seed: int, sample_rate: int) -> list[np.ndarray]:
    fn = QUERY_DEGRADATIONS[degradation]
    return [fn(c.wave, sample_rate, _rng(seed, degradation, c.track_id, c.offset_s)).astype(np.float32) for c in clips]
