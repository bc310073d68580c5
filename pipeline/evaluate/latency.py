"""Latency and throughput of each candidate x index kind: single queries end to end (audio in: cut into segments, embedded,
matched as a sequence; ranked tracks with offsets out) and search alone (the FAISS search and the matcher; p50/p95), and
batched queries per second. Rows are named ``latency/<length>s``."""

from __future__ import annotations

import time

import numpy as np

from pipeline.config import LatencySettings
from pipeline.evaluate import metrics as M
from pipeline.evaluate.queries import Clip, QueryPlan
from pipeline.evaluate.retrieval import Candidate, RowFn, as_queries


def latency_waves(clips: list[Clip], plan: QueryPlan, seed: int, count: int, sample_rate: int, level: tuple[float, float]) -> list[np.ndarray]:
    """``count`` query clips drawn (seeded) from every set of the plan applied to the given clean clips; only those drawn are made."""
    names, n = list(plan.sets), len(clips)
    drawn = np.random.default_rng(seed).permutation(len(names) * n)[:count]  # i: clip i % n under set i // n
    return [as_queries([clips[i % n]], names[i // n], plan, seed, sample_rate, level)[0] for i in drawn]


def _timed_single(cand: Candidate, idx, waves, top_k) -> tuple[list[float], list[float]]:
    e2e, search = [], []
    for w in waves:
        t0 = time.perf_counter()
        q = cand.segments([w])
        t1 = time.perf_counter()
        idx.match(q, top_k)
        t2 = time.perf_counter()
        e2e.append(t2 - t0)
        search.append(t2 - t1)
    return e2e, search


def measure_latency(candidates: list[Candidate], waves: list[np.ndarray], settings: LatencySettings, top_k: int, query_set: str, row: RowFn) -> None:
    """p50/p95 of single queries (end to end, search alone) and batched QPS, per candidate x index kind."""
    if not waves:
        return
    batch = (waves * (1 + settings.batch_size // len(waves)))[: settings.batch_size]
    for cand in candidates:
        warm = cand.segments(waves[:2])  # warm-up: the embedder
        for kind, idx in cand.indexes.items():
            idx.match(warm, top_k)  # warm-up: the index's and the catalog vectors' pages
            e2e, search = _timed_single(cand, idx, waves, top_k)
            row(cand.name, kind, query_set, "latency_e2e_p50_ms", 0, M.percentile_ms(e2e, 50))
            row(cand.name, kind, query_set, "latency_e2e_p95_ms", 0, M.percentile_ms(e2e, 95))
            row(cand.name, kind, query_set, "latency_search_p50_ms", 0, M.percentile_ms(search, 50))
            row(cand.name, kind, query_set, "latency_search_p95_ms", 0, M.percentile_ms(search, 95))
            t0 = time.perf_counter()
            segments = cand.segments(batch)
            t1 = time.perf_counter()
            idx.match(segments, top_k)
            t2 = time.perf_counter()
            row(cand.name, kind, query_set, "qps_batch", 0, len(batch) / (t2 - t0))
            row(cand.name, kind, query_set, "qps_search_batch", 0, len(batch) / max(t2 - t1, 1e-9))
