"""FAISS index kinds at scale: build time, bytes per vector, single-query latency, batch QPS, Recall@10 vs exact.

    .venv/bin/python bench/index_scale.py [--sizes 1000000] [--dim 128] [--data lowrank|uniform] [--queries 500]
        [--kinds flat hnsw ivfpq] [--ef-construction 40 100] [--ef-search 64 128]
        [--refine sq8 flat] [--nprobe 16 32 64] [--k-factor 2 4 8]

Vectors are synthetic unit vectors (128-d: the fingerprint embedder's). ``lowrank`` (default) puts them near a
32-dimensional subspace, the way learned embeddings are; ``uniform`` is the worst case for graph indexes (no
structure at all). Queries are catalog vectors plus noise, as a degraded clip is near its segment; their exact
top 10 comes from a brute-force scan of the catalog in chunks. "top 1": how often the index's first hit is the exact
first (on ``lowrank`` data that is the query's own segment; the other 9 are near ties, which Recall@10 counts too).
A catalog over --memmap-above GB is generated into a memory-mapped file under --scratch, so 10M vectors (5 GB at
128-d) never sit in memory twice.

Index parameters come from configs/index.yaml (and CLOUDTUNE__IVFPQ__... overrides). Build-time options
(--ef-construction, --refine) build once per value; search-time options (--ef-search, --nprobe, --k-factor) are
swept over one build. Batch QPS uses FAISS's threads; single-query latency is one query per call on one thread
through pipeline.index.faiss_index.search, as the service searches. Each RESULT line carries the 1-minute load
average when it was printed and the process's peak memory so far; the header the commit, date and uptime.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

CHUNK = 1 << 18  # rows generated / scanned per step


def make_vectors(n: int, dim: int, kind: str, seed: int, out: np.ndarray | None = None) -> np.ndarray:
    """``n`` unit vectors, written chunk by chunk into ``out`` (a memory map) when given."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, 32)))[0].astype(np.float32)  # [dim, 32]
    x = np.empty((n, dim), np.float32) if out is None else out
    for start in range(0, n, CHUNK):
        rows = min(CHUNK, n - start)
        if kind == "uniform":
            part = rng.standard_normal((rows, dim), dtype=np.float32)
        else:
            part = rng.standard_normal((rows, 32), dtype=np.float32) @ basis.T + 0.05 * rng.standard_normal((rows, dim), dtype=np.float32)
        part /= np.linalg.norm(part, axis=1, keepdims=True)
        x[start : start + rows] = part
    return x


def exact_top(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """The ids of each query's ``k`` highest inner products over ``x``, by brute force a chunk at a time."""
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.zeros((len(q), k), np.int64)
    step = CHUNK // 4  # [Q, step] scores and their argpartition stay well under a GB
    for start in range(0, len(x), step):
        s = q @ np.asarray(x[start : start + step]).T
        top = np.argpartition(-s, k - 1, axis=1)[:, :k] if s.shape[1] > k else np.broadcast_to(np.arange(s.shape[1]), (len(q), s.shape[1]))
        cand_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], axis=1)
        cand_i = np.concatenate([best_i, top + start], axis=1)
        keep = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, keep, 1), np.take_along_axis(cand_i, keep, 1)
    return best_i


def single_latency(index, queries: np.ndarray, k: int) -> tuple[float, float]:
    from pipeline.index.faiss_index import search  # what the service uses: one query on one thread

    for q in queries[:20]:  # warm-up
        search(index, q[None], k)
    times = []
    for q in queries:
        t0 = time.perf_counter()
        search(index, q[None], k)
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def recall_vs_exact(found: np.ndarray, exact: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(a[:k]) & set(e[:k])) / k for a, e in zip(found, exact, strict=True)]))


def commit() -> str:
    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True).stdout.strip()
    return head + ("-dirty" if dirty else "")


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def builds(kind: str, settings: dict, args) -> list[dict]:
    """The settings of each build of ``kind``: one per value of its build-time option."""
    if kind == "hnsw" and args.ef_construction:
        return [{**settings, "hnsw": dataclasses.replace(settings["hnsw"], ef_construction=v)} for v in args.ef_construction]
    if kind == "ivfpq" and args.refine:
        return [{**settings, "ivfpq": dataclasses.replace(settings["ivfpq"], refine=v)} for v in args.refine]
    return [settings]


def sweeps(kind: str, params: dict, args) -> list[dict]:
    """The search-time parameters tried on one build."""
    if kind == "hnsw":
        return [{"ef_search": v} for v in args.ef_search or [params["ef_search"]]]
    if kind == "ivfpq":
        factors = [None] if params["refine"] == "none" else args.k_factor or [params["refine_k_factor"]]
        return [{"nprobe": p, "refine_k_factor": f} for p, f in itertools.product(args.nprobe or [params["nprobe"]], factors)]
    return [{}]


def main() -> int:
    from pipeline.names import INDEX_KINDS, IVF_REFINES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--data", choices=("lowrank", "uniform"), default="lowrank")
    ap.add_argument("--queries", type=int, default=500, help="queries for Recall@10 vs exact, QPS and single-query latency")
    ap.add_argument("--kinds", nargs="+", choices=INDEX_KINDS, default=list(INDEX_KINDS))
    ap.add_argument("--ef-construction", type=int, nargs="+", help="HNSW efConstruction values, one build each (default: configs/index.yaml)")
    ap.add_argument("--ef-search", type=int, nargs="+", help="HNSW efSearch values to try (default: configs/index.yaml)")
    ap.add_argument("--refine", nargs="+", choices=IVF_REFINES, help="IVF-PQ refine steps, one build each (default: configs/index.yaml)")
    ap.add_argument("--nprobe", type=int, nargs="+", help="IVF-PQ nprobe values to try (default: configs/index.yaml)")
    ap.add_argument("--k-factor", type=float, nargs="+", help="IVF-PQ refine k_factor values to try (default: configs/index.yaml)")
    ap.add_argument("--memmap-above", type=float, default=2.0, help="GB: a larger catalog is generated into a memory-mapped file")
    ap.add_argument("--scratch", default=None, help="folder for memory-mapped catalogs and index files (default: a temporary folder)")
    ap.add_argument("--keep", default=None, help="folder that keeps each built index (and its build figures); an index already there "
                                                "is loaded instead of built, so searches can be measured again, e.g. on a quieter machine")
    args = ap.parse_args()

    from pipeline import config
    from pipeline.index.faiss_index import make_index, set_search_params

    settings = config.load_index()
    scratch = Path(tempfile.mkdtemp(prefix="index_scale-", dir=args.scratch))
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"commit {commit()}, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, uptime: {up}")
    print(f"FAISS {faiss.__version__}, {faiss.omp_get_max_threads()} threads, dim {args.dim}, data {args.data}, {args.queries} queries, "
          f"ivfpq {settings['ivfpq']}, hnsw {settings['hnsw']}", flush=True)
    rng = np.random.default_rng(1)
    try:
        for n in args.sizes:
            t0 = time.perf_counter()
            out = None
            if n * args.dim * 4 > args.memmap_above * 1e9:
                out = np.lib.format.open_memmap(scratch / f"x{n}.npy", mode="w+", dtype=np.float32, shape=(n, args.dim))
            x = make_vectors(n, args.dim, args.data, seed=n, out=out)
            picks = rng.integers(0, n, args.queries)
            q = x[picks] + 0.5 / np.sqrt(args.dim) * rng.standard_normal((args.queries, args.dim), dtype=np.float32)
            q = np.ascontiguousarray(q / np.linalg.norm(q, axis=1, keepdims=True), dtype=np.float32)
            made = time.perf_counter() - t0
            exact = exact_top(x, q, 10)
            print(f"n={n}: vectors {made:.1f} s ({'memory-mapped' if out is not None else 'in memory'}), exact top 10 of {len(q)} queries "
                  f"{time.perf_counter() - t0 - made:.1f} s, load {os.getloadavg()[0]:.2f}", flush=True)
            for kind in args.kinds:
                for build_settings in builds(kind, settings, args):
                    tag = f"{n}-{args.dim}-{args.data}-{kind}-" + "-".join(f"{v}" for v in dataclasses.astuple(build_settings[kind])) if kind != "flat" else ""
                    path = Path(args.keep) / f"{tag}.faiss" if args.keep and kind != "flat" else scratch / "index.faiss"
                    if path.exists():
                        index = faiss.read_index(str(path))
                        built = json.loads(path.with_suffix(".json").read_text())
                        params, build, load_build = built["params"], built["build_seconds"], built["load"]
                        print(f"{path}: loaded, built at commit {built['commit']}", flush=True)
                    else:
                        t0 = time.perf_counter()
                        index, params = make_index(kind, x, build_settings)
                        build = time.perf_counter() - t0
                        load_build = os.getloadavg()[0]
                        faiss.write_index(index, str(path))
                        if path.parent != scratch:
                            path.with_suffix(".json").write_text(json.dumps({"params": params, "build_seconds": build, "load": load_build,
                                                                             "commit": commit()}))
                    size = path.stat().st_size
                    if path.parent == scratch:
                        path.unlink()
                    for search_params in sweeps(kind, params, args):
                        set_search_params(index, search_params)
                        shown = {**params, **{k: v for k, v in search_params.items() if v is not None}}
                        t0 = time.perf_counter()
                        _, found = index.search(q, 10)
                        qps = len(q) / (time.perf_counter() - t0)
                        p50, p95 = single_latency(index, q, 10)
                        rec, top1 = recall_vs_exact(found, exact), float(np.mean(found[:, 0] == exact[:, 0]))
                        print(f"RESULT n={n:>8d} {kind:5s} build {build:7.1f} s (load {load_build:.2f})  {size / n:6.1f} B/vector  "
                              f"single p50 {p50:6.3f} ms p95 {p95:6.3f} ms  batch {qps:8.0f} QPS  Recall@10 vs exact {rec:.4f} (top 1 {top1:.3f})  "
                              f"load {os.getloadavg()[0]:.2f}  peak {peak_gb():.1f} GB  {shown}", flush=True)
                    del index
            del x, out
            for f in scratch.glob("x*.npy"):
                f.unlink()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"done, uptime: {up}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
