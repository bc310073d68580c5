"""The ``evaluate`` step: Recall@K, MRR, latency and QPS of every (embedder, index kind) of a run, its catalog map, its report.

1. candidates: each embedder of the run with its indexes (the catalog is embedded and the indexes built first when missing
   or stale, so a trained run needs nothing else); an embedder that cannot be built here is skipped with its reason;
2. the query sets scored (:mod:`pipeline.evaluate.retrieval`) and timed (:mod:`pipeline.evaluate.latency`);
3. the rows written to ``retrieval_metrics`` under the run id (re-evaluating replaces those of its embedders, in one transaction;
   a finished, current evaluation is not redone: :func:`finished_evaluation`);
4. the choice to publish, by merit (:mod:`pipeline.evaluate.merit`, configs/index.yaml ``publish``);
5. the catalog map (the catalog VAE on the track vectors of the chosen embedder);
6. ``reports/evaluation.html`` and, last, ``reports/evaluation.json`` (with the choice): the mark of a finished evaluation that publishing requires.

Publishing is a step of its own (:func:`pipeline.steps.retrieval.publish`). The step's own `runs` row (kind ``evaluate``)
points to the pipeline run through ``parent_run_id``.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
from sqlalchemy import delete, select

from pipeline import config, paths
from pipeline.audio.degrade import split_plan
from pipeline.embed import EmbedderUnavailable
from pipeline.embed.catalog import Track, catalog_tracks, embed_catalog, load_embeddings, run_catalogs, split_track_ids
from pipeline.evaluate.latency import latency_waves, measure_latency
from pipeline.evaluate.merit import choose
from pipeline.evaluate.queries import clean_clips, query_plan
from pipeline.evaluate.report import write_report
from pipeline.evaluate.retrieval import Candidate, score_query_sets
from pipeline.fsutil import write_json
from pipeline.index.faiss_index import build_index, load_index
from pipeline.store import db
from pipeline.store.tables import retrieval_metrics, run_metrics


def load_candidate(run_id: str, name: str, kinds: list[str], catalogs: list[str], device: str, url: str | None, progress: bool,
                   index_s: config.IndexConfig) -> Candidate:
    """One embedder with its indexes, embedding the catalog and (re)building an index unless it is there and current
    (built from the embeddings that are there now). ``index_s``: configs/index.yaml as evaluate loaded it. Raises
    EmbedderUnavailable when the embedder cannot be built here."""
    from pipeline.embed.registry import get_embedder
    from pipeline.steps.retrieval import embedder_settings

    embedder = get_embedder(name, run_id, device, **embedder_settings())
    manifest = embed_catalog(run_id, embedder, catalogs, settings=index_s["segments"], hubs=index_s["hubs"], url=url, progress=progress)
    for kind in kinds:
        files = paths.index(run_id, embedder.name, kind)
        if not files.manifest.exists() or json.loads(files.manifest.read_text()).get("embeddings_created_at") != manifest["created_at"]:
            m = build_index(run_id, embedder.name, kind, index_s, url=url)
            print(f"evaluate: built {kind} index of {embedder.name}: {m['count']} vectors in {m['build_seconds']:.2f} s", file=sys.stderr)
    return Candidate(embedder, {k: load_index(run_id, embedder.manifest(), k, index_s["search"]) for k in kinds})


def catalog_map(run_id: str, name: str, gallery: list[Track], device: str, url: str | None, progress: bool) -> dict:
    """The catalog VAE on one vector per track (the mean of its segments) of embedder ``name`` (the one the run would publish)."""
    from pipeline.train.catalog_vae import train_catalog_vae

    vectors, segments, _ = load_embeddings(paths.embeddings(run_id, name))
    groups = segments.groupby("track_id", sort=True).indices
    track_ids = list(groups)
    per_track = np.stack([vectors[groups[t]].mean(0) for t in track_ids])
    per_track /= np.maximum(np.linalg.norm(per_track, axis=1, keepdims=True), 1e-12)
    catalog_of = {t.track_id: t.catalog for t in gallery}
    uri_of = {t.track_id: t.source_uri for t in gallery}
    settings = config.section(config.CatalogVAESettings, config.load(), "catalog_vae")
    try:
        summary = train_catalog_vae(per_track, track_ids, [catalog_of[t] for t in track_ids], run_id, paths.catalog_vae_dir(run_id), settings,
                                    device=device, url=url, progress=progress)
    except ValueError as exc:  # e.g. too few tracks for a map: the evaluation stands without it
        print(f"evaluate: no catalog map: {exc}", file=sys.stderr)
        return {"embedder": name, "error": str(exc)}
    for o in summary["outliers"]:
        o["source_uri"] = uri_of.get(o["track_id"])
    return {"embedder": name, **summary}


def _inputs(run_id: str, embedders: list[str], kinds: list[str]) -> dict[str, str | None]:
    """What an evaluation scored: each embedder's catalog embeddings (their ``created_at``) and indexes (their ``built_at``)."""
    def stamp(manifest: Path, key: str) -> str | None:
        return json.loads(manifest.read_text()).get(key) if manifest.exists() else None

    out = {}
    for name in embedders:
        out[name] = stamp(paths.embeddings(run_id, name).manifest, "created_at")
        out.update({f"{name}/{kind}": stamp(paths.index(run_id, name, kind).manifest, "built_at") for kind in kinds})
    return out


def finished_evaluation(run_id: str, run_config: dict, qs: config.QuerySettings, background_dir: Path,
                        url: str | None = None) -> tuple[dict, list[dict]] | None:
    """(evaluation.json, the metric rows) of a finished evaluation of the run that is current, else None: evaluation.json (written
    last) was made with the same ``run_config`` (embedders, index kinds, catalogs, queries, track counts, segments and search
    settings), from the embeddings and indexes there now; no embedder it skipped has embeddings now, no query set it skipped
    could run now (its background sound has arrived), and the metrics DB holds as many of its rows as it wrote."""
    path = paths.evaluation_json(run_id)
    if not path.exists():
        return None
    done = json.loads(path.read_text())
    if done.get("config") != json.loads(json.dumps(run_config, default=str)) or "metric_rows" not in done:
        return None
    if done.get("inputs") != _inputs(run_id, done["embedders"], done["index_kinds"]):
        return None
    if any(paths.embeddings(run_id, name).manifest.exists() for name in done["skipped"]):
        return None
    if set(split_plan(qs.query_plan.sets, background_dir, done["sample_rate"])[1]) != set(done["skipped_sets"]):
        return None
    with db.connect(url) as conn:
        rows = [dict(r) for r in conn.execute(select(retrieval_metrics).where(retrieval_metrics.c.run_id == run_id,
                                                                              retrieval_metrics.c.embedder.in_(done["embedders"]))).mappings()]
    return (done, rows) if len(rows) == done["metric_rows"] else None


@contextmanager
def _stage(name: str, seconds: dict[str, float]):
    """Time one stage of the evaluation; printed and stored as run_metrics rows, so a slow night shows where the time went."""
    started = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - started
    print(f"evaluate: {name}: {seconds[name]:.1f} s", file=sys.stderr)


def _gallery_rows(candidates: list[Candidate], gallery: list[Track], distractors: list[str], from_canonical: int, row) -> None:
    """What the queries were searched among (tracks, hours, distractor tracks, each index's vectors) and how many query clips
    had to be cut from canonical audio; query set ``all``, like the other whole-run figures."""
    hours = sum(t.duration_s for t in gallery) / 3600
    n_distractors = sum(t.catalog in distractors for t in gallery)
    for cand in candidates:
        for kind, idx in cand.indexes.items():
            row(cand.name, kind, "all", "gallery_tracks", 0, len(gallery))
            row(cand.name, kind, "all", "gallery_hours", 0, hours)
            row(cand.name, kind, "all", "gallery_distractor_tracks", 0, n_distractors)
            row(cand.name, kind, "all", "gallery_vectors", 0, idx.index.ntotal)
            row(cand.name, kind, "all", "queries_from_canonical", 0, from_canonical)


def query_settings(plan: str | None = None, eval_s=None) -> tuple[config.QuerySettings, Path, tuple[float, float]]:
    """What the query clips of plan ``plan`` (default eval.yaml queries.plan) are made with: the query settings, the folder of
    background recordings (eval.yaml queries.background_dir; relative to the repository) and the catalog level that search
    brings a query to (audio.target_rms_dbfs, audio.peak_ceiling_dbfs)."""
    eval_s = eval_s or config.load_eval()
    qs = config.section(config.QuerySettings, eval_s.raw, "queries", plan=plan)
    audio = config.load_pipeline().audio
    return qs, config.PROJECT_ROOT / qs.background_dir, (audio.target_rms_dbfs, audio.peak_ceiling_dbfs)  # an absolute background_dir stays


def gallery_and_queries(run_id: str, catalogs: list[str] | None, distractors: list[str], split: str,
                        url: str | None = None) -> tuple[list[str], list[Track], list[Track]]:
    """(catalogs, gallery, query tracks) of an evaluation: the catalogs searched (``catalogs``, default those of the run's split
    tracks, plus ``distractors``), every ingested track of them, and the tracks of the run's ``split`` among them that are not in
    a distractor catalog. Raises ValueError when a distractor catalog has no tracks or no query track is left."""
    catalogs = sorted(set(catalogs or run_catalogs(run_id, url)) | set(distractors))
    gallery = catalog_tracks(catalogs, url)
    missing = sorted(set(distractors) - {t.catalog for t in gallery})
    if missing:
        raise ValueError(f"--distractors {', '.join(missing)}: no ingested tracks in that catalog (cloudtune ingest SRC --catalog NAME)")
    query_ids = set(split_track_ids(run_id, split))
    query_tracks = [t for t in gallery if t.track_id in query_ids and t.catalog not in distractors]
    if not query_tracks:
        raise ValueError(f"run {run_id}: no track of its {split} split is in catalog(s) {', '.join(catalogs)}")
    return catalogs, gallery, query_tracks


def check_unseen_distractors(run_id: str, embedders: list[str], gallery: list[Track], distractors: list[str]) -> None:
    """A ValueError when the run's fingerprint model was trained on a track of a distractor catalog (through
    ``fingerprint_training.train_catalogs``): a distractor must be as new to the model as the catalog a user brings."""
    ckpt = paths.fingerprint_checkpoint(run_id)
    if "fingerprint" not in embedders or not distractors or not ckpt.exists():
        return
    from pipeline.models.fingerprint import read_checkpoint

    trained = set(read_checkpoint(ckpt).get("train_tracks", ()))
    seen = sorted(t.track_id for t in gallery if t.catalog in distractors and t.track_id in trained)
    if seen:
        raise ValueError(f"--distractors {', '.join(distractors)}: the fingerprint model of run {run_id} was trained on {len(seen)} of their "
                         f"tracks (e.g. {seen[0]}; fingerprint_training.train_catalogs): a distractor catalog must be one it never heard")


def evaluate(run_id: str, *, embedders: list[str] | None = None, index_kinds: list[str] | None = None, catalogs: list[str] | None = None,
             distractors: list[str] | None = None, device: str = "cpu", url: str | None = None, progress: bool = True,
             plan: str | None = None) -> dict:
    """Evaluate the run against its catalogs (default: those of its split tracks) plus ``distractors`` (catalogs indexed but never
    queried; default configs/eval.yaml ``evaluation.distractors``) under query plan ``plan`` (default eval.yaml queries.plan); returns
    {"run_id", "rows", "report", "skipped", "skipped_sets": {query set name: reason}, "seconds", "choice"}. A finished evaluation
    that is current (:func:`finished_evaluation`) is not redone: its rows are read back and ``reused`` is True."""
    eval_s, index_s = config.load_eval(), config.load_index()
    qs, background_dir, level = query_settings(plan, eval_s)
    run_s, lat_s = eval_s["evaluation"], eval_s["latency"]
    embedders = list(embedders or run_s.embedders)
    kinds = list(dict.fromkeys(["flat", *(index_kinds or run_s.index_kinds)]))  # flat: the exact reference of the ANN kinds
    distractors = sorted(set(run_s.distractors if distractors is None else distractors))
    catalogs, gallery, query_tracks = gallery_and_queries(run_id, catalogs, distractors, qs.split, url)
    check_unseen_distractors(run_id, embedders, gallery, distractors)
    recall_k = eval_s["metrics"].recall_k
    queries = {**{k: v for k, v in asdict(qs).items() if k != "plans"}, **asdict(qs.query_plan)}  # the plan run, not every plan
    run_config = {"run": run_id, "embedders": embedders, "index_kinds": kinds, "catalogs": catalogs, "distractors": distractors,
                  "queries": queries, "query_tracks": len(query_tracks), "gallery_tracks": len(gallery),
                  "search": asdict(index_s["search"]),  # how queries are cut and matched
                  "segments": asdict(index_s["segments"]),  # how the catalog is cut
                  "hubs": asdict(index_s["hubs"])}  # how its hub scores are measured; another way of any is another evaluation
    precision = config.load_fingerprint().fingerprint_inference.precision
    if "fingerprint" in embedders and precision != "float32":  # int8 vectors are others (float32 ones, torch or ONNX, are alike)
        run_config["fingerprint_precision"] = precision
    reused = finished_evaluation(run_id, run_config, qs, background_dir, url)
    if reused:
        done, rows = reused
        print(f"evaluate: run {run_id} already evaluated ({len(rows)} metric rows, {done['finished_at']}; report {done['report']}); skipped",
              file=sys.stderr)
        return {"run_id": run_id, "rows": rows, "report": done["report"], "skipped": done["skipped"], "skipped_sets": done["skipped_sets"],
                "seconds": done["seconds"], "choice": done["choice"], "reused": True}
    rows: list[dict] = []
    seconds: dict[str, float] = {}

    def row(embedder, kind, qset, metric, k, value):
        rows.append({"run_id": run_id, "embedder": embedder, "index_kind": kind, "query_set": qset, "metric": metric, "k": k,
                     "value": float(value), "recorded_at": db.utcnow()})

    with db.connect(url) as conn, db.recorded_run(conn, "evaluate", run_config, parent_run_id=run_id) as step:
        db.ensure_run(conn, run_id)
        candidates, skipped = [], {}
        with _stage("embed and index", seconds):
            for name in embedders:
                try:
                    candidates.append(load_candidate(run_id, name, kinds, catalogs, device, url, progress, index_s))
                except EmbedderUnavailable as exc:
                    skipped[name] = str(exc)
                    print(f"evaluate: skipping {name}: {exc}", file=sys.stderr)
        if not candidates:
            raise RuntimeError(f"evaluate: no embedder could be evaluated ({'; '.join(skipped.values())})")
        sr = candidates[0].embedder.sample_rate
        plan = query_plan(qs, background_dir, sr)
        for name, reason in plan.skipped.items():
            print(f"evaluate: skipping query set {name}: {reason}", file=sys.stderr)
        with _stage("query clips", seconds):
            clips_of = clean_clips(query_tracks, plan.lengths_s, qs, sr)  # each source file is decoded once, for every length
        fallbacks = sum(not c.from_source for clips in clips_of.values() for c in clips)
        if fallbacks:
            print(f"evaluate: {fallbacks} query clip(s) cut from canonical audio: their source files are gone", file=sys.stderr)
        with _stage("score query sets", seconds):
            score_query_sets(candidates, clips_of, plan, qs.seed, recall_k, sr, level, row, progress)
        with _stage("latency", seconds):
            length = min(plan.lengths_s, key=lambda x: (abs(x - lat_s.length_s), -x))  # latency.length_s, or the plan's nearest length
            measure_latency(candidates, latency_waves(clips_of[length], plan, qs.seed, lat_s.single_queries, sr, level), lat_s, max(recall_k),
                            f"latency/{length:g}s", row)
        _gallery_rows(candidates, gallery, distractors, fallbacks, row)
        names = [c.name for c in candidates]
        # the rows of these embedders replaced in one transaction: none left over from an earlier evaluation of other query sets
        conn.execute(delete(retrieval_metrics).where(retrieval_metrics.c.run_id == run_id, retrieval_metrics.c.embedder.in_(names)))
        db.upsert(conn, retrieval_metrics, rows)
        conn.commit()
        choice = choose(rows, index_s["publish"])
        print(f"evaluate: choice {choice['embedder']}/{choice['index_kind']}: {choice['reason']}", file=sys.stderr)
        with _stage("catalog map", seconds):
            cmap = catalog_map(run_id, choice["embedder"], gallery, device, url, progress) if run_s.catalog_vae else None
        with _stage("report", seconds):
            report = write_report(run_id, rows, {**skipped, **{f"query set {n}": why for n, why in plan.skipped.items()}}, run_config, cmap,
                                  choice)
        db.upsert(conn, run_metrics, [{"run_id": run_id, "stage": "evaluate", "metric": f"seconds/{name}", "k": 0, "value": s,
                                       "recorded_at": db.utcnow()} for name, s in seconds.items()])
        conn.commit()
        write_json(paths.evaluation_json(run_id), {"run_id": run_id, "evaluate_run_id": step.run_id, "finished_at": db.utcnow().isoformat(),
                                                   "embedders": names, "index_kinds": kinds, "catalogs": catalogs, "distractors": distractors,
                                                   "skipped": skipped, "skipped_sets": plan.skipped, "seconds": seconds, "report": str(report),
                                                   "choice": choice, "config": run_config, "metric_rows": len(rows), "sample_rate": sr,
                                                   "inputs": _inputs(run_id, names, kinds)})
        step.message = (f"{len(rows)} metric rows for run {run_id} ({len(gallery)} gallery tracks); choice {choice['embedder']}/"
                        f"{choice['index_kind']}; report {report}")
    return {"run_id": run_id, "rows": rows, "report": str(report), "skipped": skipped, "skipped_sets": plan.skipped, "seconds": seconds,
            "choice": choice}
