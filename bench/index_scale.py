"""FAISS index kinds at scale: build time, bytes per vector, single-query latency, batch QPS, Recall@10 vs exact.

    .venv/bin/python bench/index_scale.py [--sizes 10000 100000 1000000] [--dim 256] [--data lowrank|uniform]

Vectors are synthetic unit vectors of the embedder's dimension. ``lowrank`` (default) puts them near a
32-dimensional subspace, the way learned embeddings are; ``uniform`` is the worst case for graph
indexes (no structure at all). Queries are catalog vectors plus noise, as a degraded clip is near its
segment. Index parameters come from configs/index.yaml (--ef-search overrides HNSW's). Search uses
FAISS's threads for batches; single-query latency is one query per call on one thread, as in search.
"""

from __future__ import annotations

import argparse
import sys
import time

import faiss
import numpy as np


def make_vectors(n: int, dim: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "uniform":
        x = rng.standard_normal((n, dim), dtype=np.float32)
    else:
        basis = np.linalg.qr(rng.standard_normal((dim, 32)))[0].astype(np.float32)  # [dim, 32]
        x = rng.standard_normal((n, 32), dtype=np.float32) @ basis.T + 0.05 * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def single_latency(index, queries: np.ndarray, k: int) -> tuple[float, float]:
    from pipeline.index.faiss_index import search  # what the service uses: one query on one thread

    times = []
    for q in queries:
        t0 = time.perf_counter()
        search(index, q[None], k)
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def recall_vs_exact(found: np.ndarray, exact: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(a[:k]) & set(e[:k])) / k for a, e in zip(found, exact, strict=True)]))


def main() -> int:
    from pipeline.names import INDEX_KINDS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--data", choices=("lowrank", "uniform"), default="lowrank")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--kinds", nargs="+", choices=INDEX_KINDS, default=list(INDEX_KINDS))
    ap.add_argument("--ef-search", type=int, nargs="+", help="HNSW efSearch values to try (default: configs/index.yaml)")
    args = ap.parse_args()

    from pipeline import config
    from pipeline.index.faiss_index import make_index

    settings = config.load_index()
    ef_values = args.ef_search or [settings["hnsw"].ef_search]
    rng = np.random.default_rng(0)
    print(f"FAISS {faiss.__version__}, {faiss.omp_get_max_threads()} threads, dim {args.dim}, data {args.data}, {args.queries} queries")
    for n in args.sizes:
        x = make_vectors(n, args.dim, args.data, rng)
        picks = rng.integers(0, n, args.queries)
        q = x[picks] + 0.5 / np.sqrt(args.dim) * rng.standard_normal((args.queries, args.dim), dtype=np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        exact = None
        for kind in args.kinds:
            t0 = time.perf_counter()
            index, params = make_index(kind, x, settings)
            build = time.perf_counter() - t0
            size = faiss.serialize_index(index).nbytes
            for ef in ef_values if kind == "hnsw" else [None]:
                if ef is not None:
                    index.hnsw.efSearch = ef
                    params = {**params, "ef_search": ef}
                t0 = time.perf_counter()
                _, found = index.search(q, 10)
                qps = len(q) / (time.perf_counter() - t0)
                if kind == "flat":
                    exact = found
                p50, p95 = single_latency(index, q[: min(len(q), 500)], 10)
                rec = recall_vs_exact(found, exact) if exact is not None else float("nan")
                print(f"RESULT n={n:>8d} {kind:5s} build {build:7.2f} s  {size / n:7.1f} bytes/vector  single p50 {p50:6.3f} ms p95 {p95:6.3f} ms  "
                      f"batch {qps:9.0f} QPS  Recall@10 vs exact {rec:.4f}  {params}", flush=True)
            del index
    return 0


if __name__ == "__main__":
    sys.exit(main())
