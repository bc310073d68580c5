"""``cloudtune evaluate``: Recall@K, MRR, latency and QPS of every (embedder, index kind) of a run.

Missing steps are done first (catalog embedding, index builds), so a trained run needs nothing else.
All rows go to ``retrieval_metrics`` under the run's id (an idempotent upsert: re-evaluating replaces
them); the HTML report goes to ``runs/<run_id>/reports/evaluation.html``. Only a finished evaluation
publishes the run (``publish=True``), so a failed run never replaces the published one.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict

import numpy as np
from tqdm import tqdm

from pipeline import config, paths
from pipeline.embed import EmbedderUnavailable
from pipeline.embed.catalog import catalog_tracks, embed_catalog, run_catalogs, split_track_ids
from pipeline.embed.registry import get_embedder
from pipeline.evaluate import metrics as M
from pipeline.evaluate.queries import clean_clips, degrade, set_name
from pipeline.fsutil import write_json
from pipeline.index.faiss_index import build_index, load_index
from pipeline.store import db
from pipeline.store.tables import retrieval_metrics


def _ensure_artifacts(run_id, embedder, kinds, catalogs, index_settings, url, progress):
    """Embed the catalog and build the indexes unless they are there and current (an index is current when it was
    built from the embeddings that are there now)."""
    manifest = embed_catalog(run_id, embedder, catalogs, settings=index_settings["segments"], url=url, progress=progress)
    for kind in kinds:
        path = paths.index(run_id, embedder.name, kind).manifest
        if not path.exists() or json.loads(path.read_text()).get("embeddings_created_at") != manifest["created_at"]:
            m = build_index(run_id, embedder.name, kind, settings=index_settings, url=url)
            print(f"evaluate: built {kind} index of {embedder.name}: {m['count']} vectors in {m['build_seconds']:.2f} s", file=sys.stderr)
    return manifest


def _catalog_map(run_id, embedders, gallery, device, url, progress) -> dict | None:
    """The catalog VAE on one vector per track (the mean of its segments) of the embedder the run will publish."""
    from pipeline.embed.catalog import load_embeddings
    from pipeline.train.catalog_vae import train_catalog_vae

    wanted = config.load_index()["publish"].embedder
    name = wanted if wanted in [e.name for e in embedders] else embedders[-1].name
    vectors, segments, _ = load_embeddings(paths.embeddings(run_id, name))
    groups = segments.groupby("track_id", sort=True).indices
    track_ids = list(groups)
    per_track = np.stack([vectors[groups[t]].mean(0) for t in track_ids])
    per_track /= np.maximum(np.linalg.norm(per_track, axis=1, keepdims=True), 1e-12)
    catalog_of = {t.track_id: t.catalog for t in gallery}
    uri_of = {t.track_id: t.source_uri for t in gallery}
    try:
        summary = train_catalog_vae(per_track, track_ids, [catalog_of[t] for t in track_ids], run_id, paths.catalog_vae_dir(run_id),
                                    device=device, url=url, progress=progress)
    except ValueError as exc:  # e.g. too few tracks for a map: the evaluation stands without it
        print(f"evaluate: no catalog map: {exc}", file=sys.stderr)
        return {"embedder": name, "error": str(exc)}
    for o in summary["outliers"]:
        o["source_uri"] = uri_of.get(o["track_id"])
    return {"embedder": name, **summary}


def _timed_single(embedder, idx, waves, top_k):
    e2e, search = [], []
    for w in waves:
        t0 = time.perf_counter()
        q = embedder.embed([w])
        t1 = time.perf_counter()
        idx.search_indices(q, top_k)
        t2 = time.perf_counter()
        e2e.append(t2 - t0)
        search.append(t2 - t1)
    return e2e, search


def evaluate(run_id: str, *, embedders: list[str] | None = None, index_kinds: list[str] | None = None, catalogs: list[str] | None = None,
             device: str = "cpu", publish: bool = True, url: str | None = None, progress: bool = True, embedder_settings: dict | None = None) -> dict:
    """Evaluate the run; returns {"rows": [...], "report": path, "skipped": {embedder: reason}, "published": bool}.
    ``embedder_settings``: keyword arguments of ``get_embedder`` (``wav2vec2``, ``sample_rate``), read from config by the caller;
    without them wav2vec2 is skipped."""
    eval_s = config.load_eval()
    index_s = config.load_index()
    qs, run_s, lat_s = eval_s["queries"], eval_s["run"], eval_s["latency"]
    embedders = list(embedders or run_s.embedders)
    kinds = list(index_kinds or run_s.index_kinds)
    if "flat" not in kinds:
        kinds.insert(0, "flat")  # the exact reference for the ANN kinds' recall
    catalogs = sorted(catalogs or run_catalogs(run_id, url))
    gallery = catalog_tracks(catalogs, url)
    query_ids = set(split_track_ids(run_id, qs.split))
    query_tracks = [t for t in gallery if t.track_id in query_ids]
    if not query_tracks:
        raise ValueError(f"run {run_id}: no track of its {qs.split} split is in catalog(s) {', '.join(catalogs)}")
    max_k = max(eval_s["metrics"].recall_k)
    run_config = {"run": run_id, "embedders": embedders, "index_kinds": kinds, "catalogs": catalogs, "queries": asdict(qs),
                  "query_tracks": len(query_tracks), "gallery_tracks": len(gallery)}
    rows: list[dict] = []
    skipped: dict[str, str] = {}
    with db.connect(url) as conn, db.recorded_run(conn, "evaluate", run_config) as step:
        db.ensure_run(conn, run_id)
        loaded = []
        for name in embedders:
            try:
                emb = get_embedder(name, run_id, device, **(embedder_settings or {}))
            except EmbedderUnavailable as exc:
                skipped[name] = str(exc)
                print(f"evaluate: skipping {name}: {exc}", file=sys.stderr)
                continue
            _ensure_artifacts(run_id, emb, kinds, catalogs, index_s, url, progress)
            loaded.append((emb, {k: load_index(run_id, emb.manifest(), k) for k in kinds}))
        if not loaded:
            raise RuntimeError(f"evaluate: no embedder could be evaluated ({'; '.join(skipped.values())})")
        sr = loaded[0][0].sample_rate

        def row(emb, kind, qset, metric, k, value):
            rows.append({"run_id": run_id, "embedder": emb, "index_kind": kind, "query_set": qset, "metric": metric, "k": k, "value": float(value),
                         "recorded_at": db.utcnow()})

        exact_ids: dict[str, list[np.ndarray]] = {e.name: [] for e, _ in loaded}
        approx_ids: dict[tuple[str, str], list[np.ndarray]] = {}
        sets = [(length, d) for length in qs.lengths_s for d in qs.degradations]
        bar = tqdm(total=len(sets) * len(loaded), desc="evaluate", unit="set", disable=not progress)
        clips_of = clean_clips(query_tracks, qs.lengths_s, qs, sr)  # each track read once; the latency part uses them too
        for length in qs.lengths_s:
            clips = clips_of[length]
            if not clips:
                print(f"evaluate: no query track is {length:g} s long: skipping {length:g} s queries", file=sys.stderr)
                continue
            for degradation in qs.degradations:
                waves = degrade(clips, degradation, qs.seed, sr)
                name = set_name(length, degradation)
                for emb, indexes in loaded:
                    vectors = emb.embed(waves)
                    for kind, idx in indexes.items():
                        truth = [int(np.flatnonzero(idx.track_ids == c.track_id)[0]) for c in clips]
                        ranked = [[t for t, _ in hits] for hits in idx.search_indices(vectors, max_k)]
                        r = M.ranks(ranked, truth)
                        for k in eval_s["metrics"].recall_k:
                            row(emb.name, kind, name, "recall", k, M.recall_at(r, k))
                        row(emb.name, kind, name, "mrr", 0, M.mrr(r))
                        row(emb.name, kind, name, "queries", 0, len(r))
                        seg_ids = idx.index.search(vectors, 10)[1]
                        if kind == "flat":
                            exact_ids[emb.name].append(seg_ids)
                        else:
                            approx_ids.setdefault((emb.name, kind), []).append(seg_ids)
                    bar.update(1)
        bar.close()
        for (emb_name, kind), parts in approx_ids.items():
            row(emb_name, kind, "all", "recall_vs_exact", 10, M.overlap_at(np.concatenate(parts), np.concatenate(exact_ids[emb_name]), 10))

        # latency: single 5 s (or the longest) clips end to end and search alone; QPS of batched queries
        length = max(qs.lengths_s)
        clips = clips_of[length]
        lat_waves = [w for d in qs.degradations for w in degrade(clips, d, qs.seed, sr)]
        lat_waves = [lat_waves[i] for i in np.random.default_rng(qs.seed).permutation(len(lat_waves))[: lat_s.single_queries]]
        batch = lat_waves * (1 + lat_s.batch_size // max(1, len(lat_waves)))
        batch = batch[: lat_s.batch_size]
        lat_set = f"latency/{length:g}s"
        for emb, indexes in loaded:
            emb.embed(lat_waves[:2])  # warm-up
            for kind, idx in indexes.items():
                e2e, search = _timed_single(emb, idx, lat_waves, max_k)
                row(emb.name, kind, lat_set, "latency_e2e_p50_ms", 0, M.percentile_ms(e2e, 50))
                row(emb.name, kind, lat_set, "latency_e2e_p95_ms", 0, M.percentile_ms(e2e, 95))
                row(emb.name, kind, lat_set, "latency_search_p50_ms", 0, M.percentile_ms(search, 50))
                row(emb.name, kind, lat_set, "latency_search_p95_ms", 0, M.percentile_ms(search, 95))
                t0 = time.perf_counter()
                vecs = emb.embed(batch)
                t1 = time.perf_counter()
                idx.search_indices(vecs, max_k)
                t2 = time.perf_counter()
                row(emb.name, kind, lat_set, "qps_batch", 0, len(batch) / (t2 - t0))
                row(emb.name, kind, lat_set, "qps_search_batch", 0, len(batch) / max(t2 - t1, 1e-9))
        db.upsert(conn, retrieval_metrics, rows)
        conn.commit()

        catalog_map = _catalog_map(run_id, [e for e, _ in loaded], gallery, device, url, progress) if run_s.catalog_vae else None

        from pipeline.evaluate.report import write_report

        report = write_report(run_id, rows, skipped, run_config, catalog_map)
        write_json(paths.evaluation_json(run_id),
                   {"run_id": run_id, "evaluate_run_id": step.run_id, "finished_at": db.utcnow().isoformat(), "embedders": [e.name for e, _ in loaded],
                    "index_kinds": kinds, "skipped": skipped, "report": str(report)})
        step.message = f"{len(rows)} metric rows for run {run_id}; report {report}"
    published = False
    if publish:
        from pipeline.publish import publish_run

        publish_run(run_id, url=url)
        published = True
    return {"run_id": run_id, "rows": rows, "report": str(report), "skipped": skipped, "published": published}
