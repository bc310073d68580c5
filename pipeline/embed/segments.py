"""Segmentation, one rule for the catalog and the queries: windows of ``window_s`` every ``hop_s``, the tail covered by a last
window ending at the end, nothing below ``min_s``.

The catalog (:mod:`pipeline.embed.catalog`) cuts every track with it and records the values it used in its embeddings
manifest (``manifest["segmentation"]``: window_s, hop_s, min_s, batch_size, sample_rate). A query is cut with the values of
the catalog it is searched in, read from that manifest (never from the config: every embedder may segment its own way), so
query segments and catalog segments have the same length and the same grid. A query shorter than one window (or than
``min_s``) is one segment of the whole query. A query may be cut on a coarser grid than the catalog, every few of its hops
(``search.query_hop_steps``: a catalog cut finely meets a query's segments nearer their own alignment, while the query's
fewer segments cost less to embed), and a short query at a finer hop, for more segments (``search.min_query_segments``).
:func:`embed_query_rates` also plays each query at a few rates, for clips played slightly fast or slow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from pipeline.config import SearchSettings
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
    segment starts in the query (seconds); ``rate``: the playback rate it was played at (:func:`embed_query_rates`)."""

    vectors: np.ndarray
    starts_s: np.ndarray
    rate: float = 1.0

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


DENSER_STEPS = 2  # a short query's hop is halved at most this often: down to a quarter of the catalog's


def query_spans(n_samples: int, sr: int, s, min_segments: int = 1) -> list[tuple[int, int]]:
    """The segments of a query: the catalog's rule, and one segment of the whole query when that rule gives none (a query
    shorter than ``min_s``). A query that this cuts into fewer than ``min_segments`` windows (a short one: 2 s gives 3 at a
    0.5 s hop) is cut at half the hop, then a quarter, until it has that many: more overlapping windows give the sequence
    matcher more votes, and a window between two catalog segments meets them half a hop off, which training covers."""
    spans = segment_starts(n_samples, sr, s) or [(0, n_samples)]
    hop = s.hop_s
    for _ in range(DENSER_STEPS):
        if len(spans) >= min_segments:
            break
        hop /= 2
        spans = segment_starts(n_samples, sr, Segmentation(s.window_s, hop, s.min_s)) or spans
    return spans


def embed_queries(embedder: SegmentEmbedder, waves: Sequence[np.ndarray], s: Segmentation, min_segments: int = 1) -> list[QuerySegments]:
    """Cut every query (mono at ``embedder.sample_rate``) with ``s`` (:func:`query_spans`) and embed all their segments in one
    ``embedder.embed`` call; per query its vectors and segment start times, in the order given."""
    sr = embedder.sample_rate
    spans = [query_spans(len(w), sr, s, min_segments) for w in waves]
    vectors = embed_spans(embedder, waves, spans)
    out, i = [], 0
    for sp in spans:
        out.append(QuerySegments(vectors[i : i + len(sp)], np.array([a / sr for a, _ in sp], np.float64)))
        i += len(sp)
    return out


def embed_query_rates(embedder: SegmentEmbedder, waves: Sequence[np.ndarray], catalog: Segmentation, search: SearchSettings) -> list[tuple[QuerySegments, ...]]:
    """The queries as search and evaluate match them against a catalog cut with ``catalog``: a query of at most
    ``search.rates_max_s`` played at each of ``search.rates`` (a rate of 1.1 plays it 10 % faster, undoing a clip that was played
    10 % slower), a longer one as played, cut every ``search.query_hop_steps`` of the catalog's hops (so every query segment
    still starts on the catalog's grid), and all embedded in one call (:func:`embed_queries`); per query one QuerySegments per
    rate, in the order of ``rates``. A clip keeps its start at every rate, so offsets need no correction."""
    from pipeline.audio.degrade import speed

    sr = embedder.sample_rate
    rates = [search.rates if len(w) <= search.rates_max_s * sr else (1.0,) for w in waves]
    played = [w if r == 1.0 else speed(w, sr, r) for w, rs in zip(waves, rates, strict=True) for r in rs]
    cut = Segmentation(catalog.window_s, catalog.hop_s * search.query_hop_steps, catalog.min_s)
    flat = iter(embed_queries(embedder, played, cut, search.min_query_segments))
    return [tuple(replace(next(flat), rate=r) for r in rs) for rs in rates]
