"""Sequence matching (after NAFP, Chang et al. 2021): a query cut into segments finds the track and the place in it where
the whole sequence fits, not the track of its single best segment.

1. **Candidates.** Every query segment's FAISS neighbours (``search.match_k`` per segment, at least ``search.segments_k``
   per query in all) propose alignments: a hit of query segment i (starting ``q_i`` s into the query) on the catalog segment
   of track T starting at ``s_v`` says "the query starts ``s_v - q_i`` s into T". Offsets are kept to the millisecond, so on
   the hop grid every segment of one alignment proposes the same (T, offset); an off-grid tail segment (the window that ends
   a track or a query) proposes its own.
2. **Scores.** Each distinct alignment is scored against all query segments with exact dot products of the catalog's
   vectors (``vectors.npy``, memory-mapped): query segment i meets T's catalog segment whose start is nearest to
   ``offset + q_i``. A segment with no catalog segment within half a hop of that time (before T starts, past its end) is
   *missing*: it neither helps nor hurts. The score is the mean similarity over the segments present, and an alignment
   needs at least half of the query's segments present (else it is no candidate), so a clip running past a track's end
   still matches on what it shares with it, while an alignment hanging mostly outside the track cannot win on two lucky
   segments. With ``search.hub_penalty`` = lambda each similarity is lowered by lambda x the catalog segment's hub score
   (:mod:`pipeline.embed.hubness`): segments that lie near noise stop drawing the noisy queries of other tracks.
3. **Drift.** A clip played slightly fast or slow slides off the grid as it goes on: with ``search.match_drift`` = d each
   present segment takes its best similarity among the catalog segments up to d positions either side of the one it
   meets. Ties (common: neighbouring positions share most of their audio) go to the alignment whose drift-free mean is
   higher, so the offset stays the one the segments really meet.
4. **Tracks.** A track scores its best alignment; tracks rank by score (then drift-free score). A result is (track index,
   score, offset_s), ``offset_s`` where in the track the clip starts (at least 0, to the millisecond).
5. **Rates.** With ``search.rates`` a short clip is also matched played at each rate (:func:`best_of`: a track keeps its best,
   a score at a rate other than 1 lowered by ``search.rate_penalty``: more alignments are more chances for a wrong one).

With one query segment this is the rule of :func:`pipeline.index.faiss_index.collapse_to_tracks`: every alignment is one
segment, so a track scores its best segment (exactly, also where an ANN index's own distances are approximate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from pipeline.embed.segments import QuerySegments, Segmentation

OFFSET_BIAS = 1 << 31  # offsets in ms, shifted to stay positive inside a 64-bit (track, offset) key
TOLERANCE_MS = 1e-3  # a lookup within half a hop plus this (offsets are rounded to the millisecond) is present


@cache
def _blas():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _one_blas_thread():
    """The matcher's products are small (thousands x dim x a few): a BLAS thread team only adds wake-ups, 8 ms instead of 0.5 ms
    on a busy 2-core machine (measured), as FAISS's single queries (:func:`pipeline.index.faiss_index.search`)."""
    return _blas().limit(limits=1, user_api="blas")


@dataclass(frozen=True)
class SegmentTable:
    """A catalog's segments ordered by (track, start): what alignments are looked up in. Positions index the ordered table;
    rows index ``vectors`` (the index's and ``segments.csv``'s order)."""

    vectors: np.ndarray  # [N, dim] float32, rows as in the index (memory-mapped vectors.npy)
    row: np.ndarray  # [N] int64: the row at each position
    position: np.ndarray  # [N] int64: the position of each row
    track: np.ndarray  # [N] int64: the track index at each position
    start: np.ndarray  # [N] float64: the segment start (s) at each position
    first: np.ndarray  # [n_tracks] int64: first position of each track
    last: np.ndarray  # [n_tracks] int64: last position of each track
    segmentation: Segmentation
    hub: np.ndarray | None = None  # [N] float32: the hub score of each row (None: the catalog has none; hub_penalty must be 0)

    @classmethod
    def build(cls, vectors: np.ndarray, segment_track: np.ndarray, start_s: np.ndarray, segmentation: Segmentation,
              hub: np.ndarray | None = None) -> SegmentTable:
        segment_track, start_s = np.asarray(segment_track, np.int64), np.asarray(start_s, np.float64)
        row = np.lexsort((start_s, segment_track))
        position = np.empty_like(row)
        position[row] = np.arange(len(row))
        track, start = segment_track[row], start_s[row]
        n_tracks = int(segment_track.max()) + 1 if len(row) else 0
        first = np.searchsorted(track, np.arange(n_tracks), "left")
        last = np.searchsorted(track, np.arange(n_tracks), "right") - 1
        return cls(vectors, row, position, track, start, first, last, segmentation, hub)


def candidates_per_segment(n_segments: int, match_k: int, segments_k: int) -> int:
    """FAISS neighbours per segment of a query of ``n_segments``: ``match_k``, and at least ``segments_k`` for the whole query
    (a one-segment query searches as deep as before)."""
    return max(match_k, -(-segments_k // max(1, n_segments)))


def best_of(variants: Sequence[list[tuple[int, float, float]]], top_k: int, penalties: Sequence[float] | None = None) -> list[tuple[int, float, float]]:
    """One query matched as several variants (playback rates): every track at its best score (with that variant's offset), the
    ``top_k`` best; ``penalties[i]`` is taken off every score of variant i first. Each variant's own ``top_k`` holds every track
    of the merged ``top_k``."""
    best: dict[int, tuple[int, float, float]] = {}
    for results, penalty in zip(variants, penalties or [0.0] * len(variants), strict=True):
        for track, score, offset in results:
            if track not in best or score - penalty > best[track][1]:
                best[track] = (track, score - penalty, offset)
    return sorted(best.values(), key=lambda hit: -hit[1])[:top_k]


def match_query(table: SegmentTable, query: QuerySegments, scores: np.ndarray, ids: np.ndarray, top_k: int,
                drift: int, hub_penalty: float = 0.0) -> list[tuple[int, float, float]]:
    """One query's ``top_k`` tracks as (track index, score, offset_s), from its segments' FAISS hits ``ids`` [n, k] (``scores``
    only tells which hits exist: every alignment is re-scored exactly, each similarity less ``hub_penalty`` x the catalog
    segment's hub score)."""
    if hub_penalty and table.hub is None:
        raise ValueError("hub_penalty is set but the catalog has no hub scores (embed it again with configs/index.yaml hubs)")
    del scores  # the FAISS distances of an ANN index are approximate; scores come from the vectors
    n = len(query)
    valid = ids >= 0
    if n == 0 or not valid.any():
        return []
    seg = np.broadcast_to(np.arange(n)[:, None], ids.shape)[valid]
    pos = table.position[ids[valid]]
    offset_ms = np.rint((table.start[pos] - query.starts_s[seg]) * 1000.0).astype(np.int64)
    keys = np.sort(table.track[pos] * (1 << 32) + (offset_ms + OFFSET_BIAS))
    keys = keys[np.r_[True, keys[1:] != keys[:-1]]]  # distinct alignments (np.unique is several times slower here)
    a_track = keys >> 32
    a_offset = ((keys & 0xFFFFFFFF) - OFFSET_BIAS) / 1000.0

    # where each query segment of each alignment lands: T's segment starting nearest offset + q_i. A track's segments lie on the hop
    # grid (segment_starts) but for its tail window, so the grid gives the place to within one position; the nearest of the three
    # there is it
    hop = table.segmentation.hop_s
    t = a_offset[:, None] + query.starts_s[None, :]  # [A, n]
    lo_bound, hi_bound = table.first[a_track][:, None], table.last[a_track][:, None]
    guess = np.clip(lo_bound + np.rint(t / hop).astype(np.int64), lo_bound, hi_bound)
    at, dist = guess, np.abs(table.start[guess] - t)
    for step in (-1, 1):
        other = np.clip(guess + step, lo_bound, hi_bound)
        d_other = np.abs(table.start[other] - t)
        closer = d_other < dist
        at, dist = np.where(closer, other, at), np.where(closer, d_other, dist)
    present = dist <= hop / 2 + TOLERANCE_MS
    count = present.sum(1)
    ok = 2 * count >= n  # at least half of the query's segments meet the track
    if not ok.any():
        return []
    a_track, a_offset, at, present, count = a_track[ok], a_offset[ok], at[ok], present[ok], count[ok]
    lo_bound, hi_bound = lo_bound[ok], hi_bound[ok]

    # exact similarities, each (query segment, catalog segment) once: the positions the alignments touch, marked in a table-long
    # mask (cheaper than sorting them), against every query segment in one product
    shifts = np.arange(-drift, drift + 1)
    near = np.clip(at[:, :, None] + shifts, lo_bound[:, :, None], hi_bound[:, :, None])  # [A, n, 2d+1] positions
    touched = np.zeros(len(table.row), bool)
    touched[near] = True
    used = np.flatnonzero(touched)
    slot = np.empty(len(table.row), np.int64)
    slot[used] = np.arange(len(used))
    with _one_blas_thread():
        products = np.asarray(table.vectors[table.row[used]], np.float32) @ query.vectors.T  # [U, n]; U x dim @ dim x n: the fast way round
    if hub_penalty:
        products -= np.float32(hub_penalty) * table.hub[table.row[used]][:, None]
    sims = products[slot[near], np.arange(n)[None, :, None]]  # [A, n, 2d+1]
    exact = sims[:, :, drift]
    best = exact.copy()
    for d in range(2 * drift + 1):  # a running maximum: a reduction over an axis this short is slow in numpy
        np.maximum(best, sims[:, :, d], out=best)
    score = np.where(present, best, 0.0).sum(1) / count
    plain = np.where(present, exact, 0.0).sum(1) / count

    # best alignment per track, then the tracks in order
    order = np.lexsort((-plain, -score, a_track))
    lead = order[np.r_[True, a_track[order][1:] != a_track[order][:-1]]]
    ranked = lead[np.lexsort((-plain[lead], -score[lead]))][:top_k]
    return [(int(a_track[a]), float(score[a]), round(max(0.0, float(a_offset[a])), 3)) for a in ranked]
