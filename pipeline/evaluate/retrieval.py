"""Recall@K, MRR and offset hits of loaded (embedder, indexes) candidates over the query sets, as ``retrieval_metrics`` rows.

Every query clip is cut into segments the way the candidate's catalog was (its embeddings manifest), embedded once per
candidate and matched as a sequence (:mod:`pipeline.index.match`, as ``cloudtune search`` does) in every index kind of that
candidate; each non-exact index is also scored against the exact (``flat``) one on the query segments' vectors
(``recall_vs_exact``). Nothing here reads configs or writes files: the ``evaluate`` step (:mod:`pipeline.steps.evaluation`)
loads the candidates, stores the rows and writes the report.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from pipeline.audio import io as audio_io
from pipeline.embed import SegmentEmbedder
from pipeline.embed.segments import QuerySegments, Segmentation, embed_query_rates
from pipeline.evaluate import metrics as M
from pipeline.evaluate.queries import Clip, QueryPlan, degrade
from pipeline.evaluate.sets import set_name
from pipeline.index.faiss_index import TrackIndex

ANN_CHECK_K = 10  # recall_vs_exact compares the top-10 segment ids of each ANN index with the exact index's
OFFSET_TOLERANCE_S = 0.5  # offset_hit: the top-1 offset within max(the catalog's hop, this) of the clip's true offset


@dataclass
class Candidate:
    """One embedder under evaluation with its indexes by kind (``flat``, the exact reference, first)."""

    embedder: SegmentEmbedder
    indexes: dict[str, TrackIndex]

    @property
    def name(self) -> str:
        return self.embedder.name

    @property
    def segmentation(self) -> Segmentation:
        """How the candidate's catalog was cut (every index of one embedder is built from the same embeddings)."""
        return next(iter(self.indexes.values())).segmentation

    def segments(self, waves: Sequence[np.ndarray]) -> list[tuple[QuerySegments, ...]]:
        """The queries played at each of ``search.rates``, cut like the catalog and embedded (as search does)."""
        return embed_query_rates(self.embedder, waves, self.segmentation, next(iter(self.indexes.values())).settings)


RowFn = Callable[[str, str, str, str, int, float], None]  # (embedder, index_kind, query_set, metric, k, value)


def offset_tolerance(segmentation: Segmentation) -> float:
    """How far the found offset may be from the clip's true one to count as an offset hit: one hop of the catalog (alignments
    lie on its grid, so a right one is within half a hop; the other half allows for the neighbouring alignment, which shares
    most of its audio), and at least ``OFFSET_TOLERANCE_S`` (a fine grid asks no finer than that)."""
    return max(segmentation.hop_s, OFFSET_TOLERANCE_S)


def _score_set(cand: Candidate, clips: list[Clip], waves: list[np.ndarray], qset: str, recall_k: Sequence[int], row: RowFn,
               exact: dict, approx: dict) -> None:
    """Rank the true track of every clip in each index of one candidate, and check its offset; collect segment ids for the ANN check."""
    segments = cand.segments(waves)
    vectors = np.ascontiguousarray(np.concatenate([q[0].vectors for q in segments]), dtype=np.float32)  # at the first rate
    tolerance = offset_tolerance(cand.segmentation)
    for kind, idx in cand.indexes.items():
        truth = [int(np.flatnonzero(idx.track_ids == c.track_id)[0]) for c in clips]
        hits, neighbours = idx.match_with_neighbours(segments, max(recall_k))
        r = M.ranks([[t for t, _, _ in h] for h in hits], truth)
        for k in recall_k:
            row(cand.name, kind, qset, "recall", k, M.recall_at(r, k))
        row(cand.name, kind, qset, "mrr", 0, M.mrr(r))
        row(cand.name, kind, qset, "offset_hit", 0, M.offset_hit_rate(hits, truth, [c.offset_s for c in clips], tolerance))
        row(cand.name, kind, qset, "queries", 0, len(r))
        if kind == "flat" and neighbours.shape[1] >= ANN_CHECK_K:  # exact: its first neighbours are what a search for 10 finds
            exact.setdefault(cand.name, []).append(neighbours[first_rate_rows(segments), :ANN_CHECK_K])
        else:  # an ANN index searched as the check asks (k=10), not as deep as matching does
            seg_ids = idx.index.search(vectors, ANN_CHECK_K)[1]
            (exact.setdefault(cand.name, []) if kind == "flat" else approx.setdefault((cand.name, kind), [])).append(seg_ids)


def first_rate_rows(segments: list[tuple[QuerySegments, ...]]) -> np.ndarray:
    """The rows of each query's first variant (its first playback rate) among all variants' segments, in order."""
    rows, at = [], 0
    for q in segments:
        rows.append(np.arange(at, at + len(q[0])))
        at += sum(len(v) for v in q)
    return np.concatenate(rows) if rows else np.zeros(0, np.int64)


def as_queries(clips: list[Clip], name: str, plan: QueryPlan, seed: int, sample_rate: int, level: tuple[float, float]) -> list[np.ndarray]:
    """The clips as search would get them: degraded by the plan's set ``name`` (the world's part), then brought to the catalog
    level (search's part; ``level``: audio.target_rms_dbfs, audio.peak_ceiling_dbfs)."""
    return [audio_io.query_level(w, *level) for w in degrade(clips, name, plan.sets[name], seed, sample_rate, plan.background)]


def score_query_sets(candidates: list[Candidate], clips_of: dict[float, list[Clip]], plan: QueryPlan, seed: int, recall_k: Sequence[int],
                     sample_rate: int, level: tuple[float, float], row: RowFn, progress: bool = True) -> None:
    """Recall@K, MRR and query count of every candidate x index kind x query set (the plan's lengths x its runnable sets), then
    each ANN index's Recall@10 against the exact one over all sets. Rows go to ``row``."""
    exact: dict[str, list[np.ndarray]] = {}
    approx: dict[tuple[str, str], list[np.ndarray]] = {}
    bar = tqdm(total=len(plan.lengths_s) * len(plan.sets) * len(candidates), desc="evaluate", unit="set", disable=not progress)
    for length in plan.lengths_s:
        clips = clips_of[length]
        if not clips:
            print(f"evaluate: no query track is {length:g} s long: skipping {length:g} s queries", file=sys.stderr)
            bar.update(len(plan.sets) * len(candidates))
            continue
        for name in plan.sets:
            waves = as_queries(clips, name, plan, seed, sample_rate, level)
            for cand in candidates:
                _score_set(cand, clips, waves, set_name(length, name), recall_k, row, exact, approx)
                bar.update(1)
    bar.close()
    for (name, kind), parts in approx.items():
        row(name, kind, "all", "recall_vs_exact", ANN_CHECK_K, M.overlap_at(np.concatenate(parts), np.concatenate(exact[name]), ANN_CHECK_K))
