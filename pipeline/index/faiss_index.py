"""FAISS indexes of one run's catalog embeddings.

Kinds (inner product on unit vectors = cosine):
- ``flat``: IndexFlatIP, exact; the reference the others are measured against.
- ``hnsw``: IndexHNSWFlat (M, efConstruction, efSearch).
- ``ivfpq``: IndexIVFPQ with nlist by the FAISS guideline (4..16 * sqrt(N)) and PQ sub-quantizers; its coarse k-means trains on
  a random sample (``train_per_list`` vectors per list). ``refine`` (``flat`` | ``sq8``) wraps it in IndexRefineFlat /
  IndexRefine(IndexScalarQuantizer 8 bit): the ``refine_k_factor * k`` best PQ hits are re-ranked on full or 8-bit vectors.

``runs/<run_id>/index/<embedder>/<kind>/`` holds ``index.faiss`` and ``manifest.json`` (embedder manifest,
dim, count, params, build seconds, bytes); every build also gets an ``index_builds`` row. Loading checks
the manifest against the embeddings it will be searched with, so an index is never queried with
vectors of another model, and brings those embeddings along (memory-mapped) for sequence matching
(:mod:`pipeline.index.match`): a query cut into segments is answered by ``TrackIndex.match``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import faiss
import numpy as np
import pandas as pd

from pipeline import paths
from pipeline.embed.catalog import load_embeddings, load_hubness
from pipeline.embed.segments import QuerySegments, Segmentation
from pipeline.errors import one_line
from pipeline.fsutil import atomic_path, write_json
from pipeline.index.match import SegmentTable, best_of, candidates_per_segment, match_query
from pipeline.names import INDEX_KINDS
from pipeline.store import db
from pipeline.store.tables import index_builds

if TYPE_CHECKING:
    from pipeline.config import SearchSettings

ADD_CHUNK = 1 << 18  # vectors added per call: a memory-mapped catalog is read a piece at a time, never copied whole


def ivfpq_params(n: int, dim: int, s) -> dict:
    """nlist = nlist_per_sqrt_n * sqrt(N) within FAISS's 4..16*sqrt(N), capped so each list gets 39 training points;
    nbits lowered when N cannot train 2^nbits centroids per sub-quantizer (FAISS wants 39 points each). ``train_points``:
    the random training sample, ``train_per_list`` vectors per list (or per PQ centroid, when there are more of those), all N
    when fewer: k-means over every vector of a large catalog costs O(N * nlist) per iteration."""
    root = math.sqrt(n)
    nlist = int(round(min(max(s.nlist_per_sqrt_n, 4.0), 16.0) * root))
    nlist = max(1, min(nlist, n // 39))
    m = s.m
    if dim % m:
        raise ValueError(f"index ivfpq: the dimension {dim} does not divide into ivfpq.m={m} sub-quantizers")
    nbits = max(1, min(s.nbits, int(math.log2(max(2, n // 39)))))
    params = {"nlist": nlist, "m": m, "nbits": nbits, "nprobe": min(s.nprobe, nlist),
              "train_points": min(n, max(nlist, 2**nbits) * s.train_per_list), "kmeans_iters": s.kmeans_iters, "refine": s.refine}
    if s.refine != "none":
        params["refine_k_factor"] = s.refine_k_factor
    return params


def training_sample(vectors: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """``size`` distinct rows of ``vectors`` drawn at random (in catalog order: a memory-mapped file is read forward), or all of them."""
    n = len(vectors)
    if size >= n:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def index_params(kind: str, n: int, dim: int, settings: dict) -> dict:
    """The parameters an index of ``kind`` over ``n`` vectors of ``dim`` gets from ``settings`` (what its manifest records)."""
    if kind == "flat":
        return {}
    if kind == "hnsw":
        s = settings["hnsw"]
        return {"m": s.m, "ef_construction": s.ef_construction, "ef_search": s.ef_search}
    if kind == "ivfpq":
        return ivfpq_params(n, dim, settings["ivfpq"])
    raise ValueError(f"--kind {kind!r}: expected one of {', '.join(INDEX_KINDS)}")


def make_index(kind: str, vectors: np.ndarray, settings: dict, seed: int = 0) -> tuple[faiss.Index, dict]:
    """A trained, filled FAISS index of ``kind`` and its parameters. ``vectors`` [N, dim] float32, in memory or memory-mapped."""
    n, dim = vectors.shape
    if kind == "flat":
        index, params = faiss.IndexFlatIP(dim), {}
    elif kind == "hnsw":
        params = index_params(kind, n, dim, settings)
        index = faiss.IndexHNSWFlat(dim, params["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params["ef_construction"]
        index.hnsw.efSearch = params["ef_search"]
    elif kind == "ivfpq":
        index, params = _ivfpq(vectors, settings["ivfpq"], seed)
    else:
        raise ValueError(f"--kind {kind!r}: expected one of {', '.join(INDEX_KINDS)}")
    for start in range(0, n, ADD_CHUNK):
        index.add(np.ascontiguousarray(vectors[start : start + ADD_CHUNK], dtype=np.float32))
    return index, params


def _ivfpq(vectors: np.ndarray, s, seed: int) -> tuple[faiss.Index, dict]:
    """An IndexIVFPQ trained on a sample of ``vectors`` (empty), wrapped in its refine index when ``s.refine`` asks for one."""
    n, dim = vectors.shape
    params = ivfpq_params(n, dim, s)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, params["nlist"], params["m"], params["nbits"], faiss.METRIC_INNER_PRODUCT)
    for cp in (index.cp, index.pq.cp):  # the coarse lists' k-means; the PQ codebooks' (on a sample of train_per_list * 2^nbits residuals)
        cp.seed = seed
        cp.niter = params["kmeans_iters"]
        cp.max_points_per_centroid = s.train_per_list
    index.cp.max_points_per_centroid = -(-params["train_points"] // params["nlist"])  # the sample is drawn here: FAISS draws none further
    if n < 39 * max(params["nlist"], 2 ** params["nbits"]):  # a small catalog: the parameters above already adapt to it
        index.cp.min_points_per_centroid = index.pq.cp.min_points_per_centroid = 1
    sample = training_sample(vectors, params["train_points"], seed)
    index.train(sample)
    index.nprobe = params["nprobe"]
    if params["refine"] == "none":
        return index, params
    if params["refine"] == "flat":
        refined = faiss.IndexRefineFlat(index)
    else:
        sq8 = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        sq8.train(sample)
        refined = faiss.IndexRefine(index, sq8)
    refined.k_factor = params["refine_k_factor"]
    return refined, params


def set_search_params(index: faiss.Index, params: dict) -> None:
    """Apply the search-time parameters among ``params`` (``ef_search``, ``nprobe``, ``refine_k_factor``) to an index that
    make_index built or faiss.read_index loaded: what a bench sweeps without building again."""
    if params.get("refine_k_factor") is not None and isinstance(index, faiss.IndexRefine):
        index.k_factor = params["refine_k_factor"]
    base = faiss.downcast_index(index.base_index) if isinstance(index, faiss.IndexRefine) else index
    if params.get("nprobe") is not None and isinstance(base, faiss.IndexIVF):
        base.nprobe = int(params["nprobe"])
    if params.get("ef_search") is not None and isinstance(base, faiss.IndexHNSW):
        base.hnsw.efSearch = int(params["ef_search"])


def built_index(run_id: str, embedder: str, kind: str, settings: dict) -> dict | None:
    """The manifest of the run's ``kind`` index of ``embedder`` when it is finished and current, else None: built from the
    embeddings there now (their ``created_at`` and count), with the parameters ``settings`` give now, and its index file of
    the size the manifest recorded."""
    files = paths.index(run_id, embedder, kind)
    emb = paths.embeddings(run_id, embedder).manifest
    if not (files.manifest.exists() and files.index.exists() and emb.exists()):
        return None
    manifest, emb_manifest = json.loads(files.manifest.read_text()), json.loads(emb.read_text())
    current = (manifest.get("embeddings_created_at") == emb_manifest["created_at"] and manifest.get("count") == emb_manifest["count"]
               and manifest.get("params") == index_params(kind, emb_manifest["count"], emb_manifest["dim"], settings)
               and manifest.get("bytes") == files.index.stat().st_size)
    return manifest if current else None


def build_index(run_id: str, embedder: str, kind: str, settings: dict, *, url: str | None = None) -> dict:
    """Build one index over ``runs/<run_id>/embeddings/<embedder>``, save it with its manifest and record the build.
    ``settings``: the sections of configs/index.yaml (``hnsw``, ``ivfpq``)."""
    vectors, _, emb_manifest = load_embeddings(paths.embeddings(run_id, embedder))
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    started = time.perf_counter()
    index, params = make_index(kind, vectors, settings)
    seconds = time.perf_counter() - started
    files = paths.index(run_id, embedder, kind)
    with atomic_path(files.index) as tmp:
        faiss.write_index(index, str(tmp))
    size = files.index.stat().st_size
    manifest = {"run_id": run_id, "kind": kind, "embedder": emb_manifest["embedder"], "embeddings_created_at": emb_manifest["created_at"],
                "dim": int(vectors.shape[1]), "count": int(index.ntotal), "params": params, "build_seconds": seconds, "bytes": size,
                "bytes_per_vector": size / max(1, index.ntotal), "built_at": db.utcnow().isoformat()}
    write_json(files.manifest, manifest)
    with db.connect(url) as conn:
        db.ensure_run(conn, run_id)
        db.upsert(conn, index_builds, [{"run_id": run_id, "embedder": embedder, "index_kind": kind, "params": params, "n_vectors": int(index.ntotal),
                                        "dim": int(vectors.shape[1]), "build_seconds": seconds, "bytes": size, "path": str(files.folder),
                                        "built_at": db.utcnow()}])
        conn.commit()
    return manifest


def collapse_to_tracks(scores: np.ndarray, ids: np.ndarray, segment_track: np.ndarray, top_k: int) -> list[list[tuple[int, float]]]:
    """Segment hits [Q, k] -> per query the ``top_k`` best tracks as (track index, score): a track scores its best segment."""
    out = []
    for row_s, row_i in zip(scores, ids, strict=True):
        best: dict[int, float] = {}
        for s, i in zip(row_s, row_i, strict=True):
            if i < 0:
                continue
            t = int(segment_track[i])
            if t not in best:  # FAISS returns hits best first, so the first hit of a track is its best
                best[t] = float(s)
                if len(best) == top_k:
                    break
        out.append(list(best.items()))
    return out


def search(index: faiss.Index, queries: np.ndarray, k: int, single: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``index.search``; a single query (``single``; default: one row) runs on one thread, also when it is several segments: an
    OpenMP team for one query only adds wake-up latency (measured: p95 12.5 ms with 2 threads on a busy 2-core machine, against
    well under 1 ms)."""
    if not (len(queries) == 1 if single is None else single):
        return index.search(queries, k)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return index.search(queries, k)
    finally:
        faiss.omp_set_num_threads(threads)


@dataclass
class TrackIndex:
    """A loaded index with its segments' tracks: ``match`` answers segmented queries in tracks (each at most once) with the
    offset where the clip starts in each; ``search`` answers one vector per query by its best segment per track."""

    index: faiss.Index
    manifest: dict
    track_ids: np.ndarray  # [n_tracks] track id of each track index
    segment_track: np.ndarray  # [N] track index of each vector
    settings: SearchSettings  # configs/index.yaml search: segments_k, match_k, match_drift, rates
    table: SegmentTable | None = None  # the catalog's segments in (track, start) order, for ``match`` (load_index fills it)

    @property
    def segmentation(self) -> Segmentation:
        """How the catalog was cut (its embeddings manifest): queries are cut the same way (:func:`pipeline.embed.segments.embed_queries`)."""
        if self.table is None:
            raise ValueError("this TrackIndex has no segment table (load it with load_index)")
        return self.table.segmentation

    def search(self, queries: np.ndarray, top_k: int) -> list[list[tuple[str, float]]]:
        return [[(self.track_ids[t], s) for t, s in hits] for hits in self.search_indices(queries, top_k)]

    def search_indices(self, queries: np.ndarray, top_k: int) -> list[list[tuple[int, float]]]:
        """Like ``search`` with track indices (positions in ``track_ids``) instead of ids."""
        k = min(self.index.ntotal, max(self.settings.segments_k, top_k))
        scores, ids = search(self.index, np.ascontiguousarray(queries, dtype=np.float32), k)
        return collapse_to_tracks(scores, ids, self.segment_track, top_k)

    def match(self, queries: Sequence[QuerySegments | Sequence[QuerySegments]], top_k: int) -> list[list[tuple[int, float, float]]]:
        """Per query its ``top_k`` tracks as (track index, score, offset_s) by sequence matching (:mod:`pipeline.index.match`):
        the segments of all queries in one FAISS call, each query's alignments scored on its own. A query may come as several
        variants (the clip at several playback rates, :func:`pipeline.embed.segments.embed_query_rates`): each is matched and
        every track keeps its best."""
        return self.match_with_neighbours(queries, top_k)[0]

    def match_with_neighbours(self, queries: Sequence[QuerySegments | Sequence[QuerySegments]],
                              top_k: int) -> tuple[list[list[tuple[int, float, float]]], np.ndarray]:
        """``match``, and the FAISS neighbours it matched from: segment ids [segments of every variant in order, k], best first
        (evaluate checks an ANN index against the exact one's without searching the exact one again)."""
        if self.table is None:
            raise ValueError("this TrackIndex has no segment table (load it with load_index)")
        s = self.settings
        groups = [(q,) if isinstance(q, QuerySegments) else tuple(q) for q in queries]
        variants = [v for g in groups for v in g]
        if not variants or not self.index.ntotal:
            return [[] for _ in groups], np.zeros((0, 0), np.int64)
        per_variant = [min(self.index.ntotal, candidates_per_segment(len(v), s.match_k, s.segments_k)) for v in variants]
        vectors = np.ascontiguousarray(np.concatenate([v.vectors for v in variants]), dtype=np.float32)
        scores, ids = search(self.index, vectors, max(per_variant), single=len(groups) == 1)
        matched, i = [], 0
        for v, k in zip(variants, per_variant, strict=True):
            matched.append(match_query(self.table, v, scores[i : i + len(v), :k], ids[i : i + len(v), :k], top_k, s.match_drift, s.hub_penalty))
            i += len(v)
        out, j = [], 0
        for g in groups:
            out.append(matched[j] if len(g) == 1 else best_of(matched[j : j + len(g)], top_k, [0.0 if v.rate == 1.0 else s.rate_penalty for v in g]))
            j += len(g)
        return out, ids


def read_manifest(path) -> dict:
    """An index's manifest.json; a ValueError naming the file when it is not a readable one."""
    try:
        manifest = json.loads(path.read_bytes())
    except ValueError as exc:
        raise ValueError(f"{path}: not a readable index manifest ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("embedder"), dict):
        raise ValueError(f"{path}: not an index manifest (no embedder in it)")
    return manifest


def check_index_file(path, manifest: dict) -> None:
    """Cheap: ``path`` exists and has the size its manifest recorded at build time (``bytes``); a truncated or replaced file
    raises a ValueError naming it. What `cloudtune serve` checks before it starts and `publish` before it publishes."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (its manifest is there: rebuild the index)")
    size, want = path.stat().st_size, manifest.get("bytes")
    if want is not None and size != want:
        raise ValueError(f"{path}: {size} bytes, but its manifest says {want}: truncated or replaced (rebuild the index)")


def read_index_file(path, manifest: dict) -> faiss.Index:
    """faiss.read_index after :func:`check_index_file`; FAISS's own error (a corrupt file of the right size) becomes a ValueError
    naming the file, on one line."""
    check_index_file(path, manifest)
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        reason = one_line(exc)[:200]
        raise ValueError(f"{path}: not a readable FAISS index ({reason})") from None


def load_index(run_id: str, embedder_manifest: dict, kind: str, settings: SearchSettings) -> TrackIndex:
    """Load an index and check it was built from vectors of this very embedder (name, dim, version); with it the catalog's
    vectors (memory-mapped), segments and segmentation, for sequence matching. ``settings``: configs/index.yaml ``search``
    (``segments_k``, ``match_k``: FAISS neighbours per query and per query segment; ``match_drift``, ``rates``, ``hub_penalty``:
    the matcher's; a hub penalty loads the catalog's hub scores too)."""
    files = paths.index(run_id, embedder_manifest["name"], kind)
    folder, manifest_path = files.folder, files.manifest
    if not manifest_path.exists():
        raise FileNotFoundError(f"{folder}: no {kind} index (run `cloudtune index build --kind {kind} --embedder {embedder_manifest['name']}`)")
    manifest = read_manifest(manifest_path)
    built_for = manifest["embedder"]
    for key in ("name", "dim", "version"):
        if built_for.get(key) != embedder_manifest.get(key):
            raise ValueError(f"{manifest_path}: built for embedder {key}={built_for.get(key)!r}, but the embedder has {embedder_manifest.get(key)!r}")
    emb_files = paths.embeddings(run_id, embedder_manifest["name"])
    vectors, segments, emb_manifest = load_embeddings(emb_files)
    if manifest.get("embeddings_created_at") != emb_manifest["created_at"]:
        raise ValueError(f"{manifest_path}: built from older embeddings than {emb_files.folder} holds now: rebuild the index")
    index = read_index_file(files.index, manifest)
    if len(segments) != index.ntotal:
        raise ValueError(f"{folder}: the index has {index.ntotal} vectors but segments.csv {len(segments)}: rebuild the index")
    codes, uniques = pd.factorize(segments.track_id)
    codes = codes.astype(np.int64)
    hub = load_hubness(emb_files, emb_manifest) if settings.hub_penalty else None
    table = SegmentTable.build(vectors, codes, segments.start_s.to_numpy(), Segmentation.of(emb_manifest["segmentation"]), hub)
    return TrackIndex(index, manifest, np.asarray(uniques), codes, settings, table)


__all__ = ["INDEX_KINDS", "TrackIndex", "build_index", "check_index_file", "collapse_to_tracks", "ivfpq_params", "load_index", "make_index",
           "read_index_file", "read_manifest", "search", "set_search_params", "training_sample"]
