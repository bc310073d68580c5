"""Segmentation, one rule for the catalog and the queries: windows of ``window_s`` every ``hop_s``, the tail covered by a last
window ending at the end, nothing below ``min_s``.

The catalog (:mod:`pipeline.embed.catalog`) cuts every track with it and records the values it used in its embeddings
manifest (``manifest["segmentation"]``: window_s, hop_s, min_s, batch_size, sample_rate). A query is cut with the values of
the catalog it is searched in, read from that manifest (never from the config: every embedder may segment its own way), so
query segments and catalog segments have the same length and the same grid. A query shorter than one window (or than
``min_s``) is one segment of the whole query. :func:`embed_query_rates` also plays each query at a few rates, for clips
played slightly fast or slow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.embed import SegmentEmbedder, embed_spans


@dataclass(frozen=True)
class Segmentation:
    """How a catalog was cut (the embeddings manifest's ``segmentation``, less what queries do not need)."""

    window_s: float
    hop_s: float
    min_s: float

    @classmethod
    def of(cls, recorded: Mapping) -> Segmentation:
        """From an embeddings manifest's ``segmentation`` record."""
        return cls(float(recorded["window_s"]), float(recorded["hop_s"]), float(recorded["min_s"]))


@dataclass(frozen=True)
class QuerySegments:
    """One query cut into segments and embedded: ``vectors`` float32 [n, dim] (unit rows), ``starts_s`` [n] where each
    segment starts in the query (seconds)."""

    vectors: np.ndarray
    starts_s: np.ndarray

    def __len__(self) -> int:
        return len(self.starts_s)


def segment_starts(n_samples: int, sr: int, s) -> list[tuple[int, int]]:
    """(start, end) sample ranges of ``s`` (anything with window_s, hop_s, min_s): windows every hop; the tail gets a last window
    ending at the end; none when ``n_samples`` is below min_s, one of everything when it is at most one window."""
    win, hop, min_len = round(s.window_s * sr), round(s.hop_s * sr), round(s.min_s * sr)
    if n_samples < min_len:
        return []
    if n_samples <= win:
        return [(0, n_samples)]
    out = [(a, a + win) for a in range(0, n_samples - win + 1, hop)]
    if out[-1][1] < n_samples:
        out.append((n_samples - win, n_samples))
    return out


def query_spans(n_samples: int, sr: int, s) -> list[tuple[int, int]]:
    """The segments of a query: the catalog's rule, and one segment of the whole query when that rule gives none (a query
    shorter than ``min_s``)."""
    return segment_starts(n_samples, sr, s) or [(0, n_samples)]


def embed_queries(embedder: SegmentEmbedder, waves: Sequence[np.ndarray], window_s: float, hop_s: float, min_s: float) -> list[QuerySegments]:
    """Cut every query (mono at ``embedder.sample_rate``) like the catalog was cut and embed all their segments in one
    ``embedder.embed`` call; per query its vectors and segment start times, in the order given."""
    s, sr = Segmentation(window_s, hop_s, min_s), embedder.sample_rate
    spans = [query_spans(len(w), sr, s) for w in waves]
    vectors = embed_spans(embedder, waves, spans)
    out, i = [], 0
    for sp in spans:
        out.append(QuerySegments(vectors[i : i + len(sp)], np.array([a / sr for a, _ in sp], np.float64)))
        i += len(sp)
    return out


def embed_query_rates(embedder: SegmentEmbedder, waves: Sequence[np.ndarray], window_s: float, hop_s: float, min_s: float,
                      rates: Sequence[float]) -> list[tuple[QuerySegments, ...]]:
    """Like :func:`embed_queries`, each query also played at each of ``rates`` (configs/index.yaml ``search.rates``; a rate of 1.1
    plays it 10 % faster, undoing a clip that was played 10 % slower): per query one QuerySegments per rate, in the order of
    ``rates``, all embedded in one call. A clip keeps its start at every rate, so offsets need no correction."""
    if any(r <= 0 for r in rates):
        raise ValueError(f"search.rates: playback rates are above 0, got {list(rates)}")
    from pipeline.audio.degrade import speed

    sr = embedder.sample_rate
    played = [w if r == 1.0 else speed(w, sr, r) for w in waves for r in rates]
    flat = embed_queries(embedder, played, window_s, hop_s, min_s)
    return [tuple(flat[i : i + len(rates)]) for i in range(0, len(flat), len(rates))]
