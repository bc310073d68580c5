"""The steps of the ``audio_retrieval`` DAG as plain functions: JSON-able arguments in, paths and small dicts out, never arrays.

``dags/audio_retrieval.py`` only wires these together (``dags/nightly_reindex.py`` reuses several); each is usable
(and tested) without Airflow. Each step reads its settings from configs/ and hands them to the domain modules.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from pipeline import config, paths
from pipeline.fsutil import write_text_if_changed


def ingest_roots(catalog: str, roots: list[str]) -> dict:
    """Ingest new audio under ``roots`` into ``catalog`` (unchanged files are skipped); an empty list uses the catalog as it is."""
    from pipeline.steps.ingest import ingest
    from pipeline.tokenize.catalog import list_items

    line = f"ingest: no catalog roots given: using catalog {catalog} as it is"
    if roots:
        missing = [r for r in roots if not Path(r).exists()]
        if missing:
            raise FileNotFoundError(f"catalog_roots: {missing[0]}: no such file or folder")
        summary = ingest(roots, catalog=catalog)
        if not summary.ingested:
            raise RuntimeError(f"ingest: nothing could be ingested from {', '.join(roots)} ({summary.line()})")
        line = summary.line()
    print(line, file=sys.stderr)
    return {"catalog": catalog, "tracks": len(list_items(catalog)), "summary": line}


def train_tokenizer(catalog: str, backend: str) -> str | None:
    """rvq: train the catalog's codec (a no-op when the same tracks and settings made one already); moss has nothing to train."""
    if backend == "moss":
        return None
    if backend != "rvq":
        raise ValueError(f"tokenizer_backend {backend!r}: expected rvq or moss")
    from pipeline.steps.tokens import train_tokenizer as train

    folder, _ = train(catalog)
    return str(folder)


def plan_shards(catalog: str, max_shards: int, min_tracks_per_shard: int) -> list[list[int]]:
    """[[i, n], ...]: n = ceil(tracks / min_tracks_per_shard), at least 1 and at most ``max_shards``."""
    from pipeline.tokenize.catalog import list_items

    if max_shards < 1 or min_tracks_per_shard < 1:
        raise ValueError(f"max_shards {max_shards} and min_tracks_per_shard {min_tracks_per_shard} must be >= 1")
    n = max(1, min(max_shards, math.ceil(len(list_items(catalog)) / min_tracks_per_shard)))
    return [[i, n] for i in range(n)]


def tokenize_shard(catalog: str, backend: str, shard: list[int] | None, device: str = "auto") -> str:
    """Tokenize one shard of the catalog (tracks already tokenized are skipped); returns the tokens folder."""
    from pipeline.steps.tokens import tokenize

    summary = tokenize(backend, catalog, device=device, shard=tuple(shard) if shard else None)
    print(summary.line(), file=sys.stderr)
    if summary.failed and not (summary.written or summary.skipped):
        raise RuntimeError(f"tokenize: every track of shard {shard} failed: {summary.errors[0]}")
    return summary.output_root


OWN_TASK_EMBEDDERS = ("wav2vec2",)  # the audio_retrieval DAG extracts these in a task of their own (wav2vec2_features)


class StepSkipped(Exception):
    """Nothing for a step to do here (e.g. no wav2vec2 model is configured); a DAG task turns it into Airflow's skip, with this reason."""


def embedder_settings() -> dict:
    """What building an embedder needs from configs, as keyword arguments of ``pipeline.embed.registry.get_embedder``:
    pipeline.yaml's ``wav2vec2:`` and ``moss:`` sections and the catalog's ``audio.sample_rate``, index.yaml's
    ``segments.batch_size`` (segments per forward pass) and fingerprint.yaml's ``fingerprint_inference`` (torch or ONNX Runtime)."""
    data = config.load()
    return {"batch_size": config.load_index().segments.batch_size, "wav2vec2": config.section(config.Wav2Vec2Settings, data, "wav2vec2"),
            "sample_rate": config.section(config.AudioSettings, data, "audio").sample_rate,
            "moss": config.section(config.MossSettings, data, "moss"), "fingerprint": config.load_fingerprint().fingerprint_inference}


def _embed_one(run_id: str, name: str, device: str, catalogs: list[str] | None) -> str:
    """Embed the run's catalog segments with one embedder (raises EmbedderUnavailable); its embeddings folder."""
    from pipeline.devices import resolve_device
    from pipeline.embed.catalog import embed_catalog as embed
    from pipeline.embed.registry import get_embedder

    embedder = get_embedder(name, run_id, resolve_device(device), **embedder_settings())
    index_s = config.load_index()
    manifest = embed(run_id, embedder, catalogs, settings=index_s["segments"], hubs=index_s["hubs"])
    print(f"embed-catalog: {name}: {manifest['count']} segments of {manifest['tracks']} tracks", file=sys.stderr)
    return str(paths.embeddings(run_id, name).folder)


def embed_catalog(run_id: str, embedders: list[str], device: str = "auto", catalogs: list[str] | None = None) -> dict[str, str]:
    """Embed the run's catalogs with each embedder; {embedder: embeddings folder}. An embedder that cannot be built here
    (wav2vec2 without a configured model) is skipped with its reason, as evaluate skips it; when none of those asked for
    can be built, that is an error."""
    from pipeline.embed import EmbedderUnavailable

    out, skipped = {}, []
    for name in embedders:
        try:
            out[name] = _embed_one(run_id, name, device, catalogs)
        except EmbedderUnavailable as exc:
            print(f"embed-catalog: skipping {name}: {exc}", file=sys.stderr)
            skipped.append(str(exc))
    if skipped and not out:
        raise RuntimeError(f"embed-catalog: no embedder could be built ({'; '.join(skipped)})")
    return out


def wav2vec2_features(run_id: str, embedders: list[str], device: str = "auto", catalogs: list[str] | None = None) -> str:
    """wav2vec2 vectors of the run's catalog segments (the DAG's GPU-bound feature task); its embeddings folder.
    Raises StepSkipped, with the reason, when wav2vec2 is not among ``embedders`` or no model is configured:
    the task is skipped then, never filled with a random model."""
    from pipeline.embed import EmbedderUnavailable

    if "wav2vec2" not in embedders:
        raise StepSkipped(f"wav2vec2 is not among the run's embedders ({', '.join(embedders)})")
    try:
        return _embed_one(run_id, "wav2vec2", device, catalogs)
    except EmbedderUnavailable as exc:
        raise StepSkipped(str(exc)) from None


def embedded(run_id: str, embedders: list[str]) -> list[str]:
    """Those of ``embedders`` whose catalog embeddings this run has (by their manifest on disk); none is an error."""
    have = [name for name in embedders if paths.embeddings(run_id, name).manifest.exists()]
    if not have:
        raise RuntimeError(f"run {run_id}: no catalog embeddings for any of {', '.join(embedders) or 'no embedders'}")
    return have


def build_indexes(run_id: str, embedders: list[str], index_kinds: list[str]) -> list[str]:
    """Every index kind (flat always, the exact reference) over each embedder's vectors; the index folders. An index that is
    there and current (:func:`pipeline.index.faiss_index.built_index`) is kept."""
    from pipeline.index.faiss_index import build_index, built_index

    kinds = list(dict.fromkeys(["flat", *index_kinds]))
    settings = config.load_index()
    out = []
    for name in embedders:
        for kind in kinds:
            if m := built_index(run_id, name, kind, settings):
                print(f"index: {name}/{kind}: already built ({m['count']} vectors, at {m['built_at']}); skipped", file=sys.stderr)
            else:
                m = build_index(run_id, name, kind, settings)
                print(f"index: {name}/{kind}: {m['count']} vectors in {m['build_seconds']:.2f} s", file=sys.stderr)
            out.append(str(paths.index(run_id, name, kind).folder))
    return out


def gallery_catalogs(run_id: str, distractors: list[str]) -> list[str]:
    """What a run indexes: the catalogs of its split tracks plus the distractor catalogs (indexed, never queried)."""
    from pipeline.embed.catalog import run_catalogs

    return sorted(set(run_catalogs(run_id)) | set(distractors))


def evaluate(run_id: str, embedders: list[str], index_kinds: list[str], device: str = "auto", catalogs: list[str] | None = None,
             distractors: list[str] | None = None, query_plan: str | None = None) -> str:
    """Recall@K, MRR, latency rows into retrieval_metrics (not published yet) under the query plan (default eval.yaml
    queries.plan); returns the HTML report path."""
    from pipeline.devices import resolve_device
    from pipeline.steps.evaluation import evaluate as run_evaluation

    result = run_evaluation(run_id, embedders=embedders, index_kinds=index_kinds, catalogs=catalogs, distractors=distractors,
                            device=resolve_device(device), plan=query_plan)
    if not result.get("reused"):  # a reused evaluation said so itself
        print(f"evaluate: {len(result['rows'])} metric rows for run {run_id}; report {result['report']}", file=sys.stderr)
    return result["report"]


def publish(run_id: str, embedder: str | None = None, index_kind: str | None = None) -> dict:
    """Make the evaluated run the published one: the evaluation's choice by merit unless ``embedder``/``index_kind`` are named;
    the published record. The reason is printed (the DAG's publish task log) and is the message of the step's `runs` row
    (kind ``publish``, ``parent_run_id`` the run; a refused publish is a failed row). A run whose index file or embedder
    checkpoint is broken is refused (:func:`pipeline.search.check_run`): the run published before stays published. When
    published.json names the run with the same choice already (a re-run), it is checked and left as it is, and no row is added."""
    from pipeline.publish import already_published, publish_run
    from pipeline.search import check_run
    from pipeline.store import db

    settings = config.load_index()["publish"]
    record = already_published(run_id, settings, embedder, index_kind)
    if record:
        check_run(run_id, record["embedder"], record["index_kind"])
        print(f"publish: run {run_id}: already published {record['embedder']}/{record['index_kind']} (at {record['published_at']}); skipped",
              file=sys.stderr)
        return record
    named = {"run": run_id, "embedder": embedder, "index_kind": index_kind}
    with db.connect() as conn, db.recorded_run(conn, "publish", named, parent_run_id=run_id) as step:
        record = publish_run(run_id, settings, embedder, index_kind, check=check_run)
        step.message = f"published {record['embedder']}/{record['index_kind']}: {record['reason']}"
    print(f"publish: run {run_id}: {step.message}", file=sys.stderr)
    return record


def metric_summary(run_id: str):
    """The run's Recall@1/10/100 and MRR per embedder x index kind, read back from the metrics DB (sql/reports/retrieval_run.sql)."""
    from pipeline.store import reports

    return reports.run_report("retrieval_run", {"run_id": run_id})


def report(run_id: str) -> str:
    """Print the run's metric table (from the metrics DB) and write it to runs/<run_id>/reports/metrics.csv; returns that path.
    The table is one SQL query, so it is always read again; the file is rewritten only when its content changed."""
    from pipeline.store import reports

    table = metric_summary(run_id)
    if table.empty:
        raise RuntimeError(f"report: run {run_id} has no retrieval_metrics rows in {config.db_url()}")
    print(f"Retrieval metrics of run {run_id} (cloudtune report retrieval_run --param run_id={run_id}):")
    print(reports.format_frame(table))
    path = paths.metrics_csv(run_id)
    if not write_text_if_changed(path, table.to_csv(index=False)):
        print(f"report: {path} already holds this table; left as it is", file=sys.stderr)
    return str(path)
