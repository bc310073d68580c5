"""Catalog embedding, FAISS indexes, evaluation, publishing and search on a tiny real run (SQLite and PostgreSQL)."""

import html
import importlib.util
import json
import shutil
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np
import pytest
import soundfile as sf
import yaml
from sqlalchemy import create_engine, select, text

from pipeline import config, paths
from pipeline.audio.synth import build_catalog
from pipeline.cli import main
from pipeline.embed.catalog import catalog_tracks, embed_catalog
from pipeline.embed.registry import get_embedder
from pipeline.embed.segments import segment_starts
from pipeline.index.faiss_index import TrackIndex, build_index, ivfpq_params, load_index, make_index, search, set_search_params, training_sample
from pipeline.publish import published
from pipeline.steps.evaluation import evaluate
from pipeline.steps.ingest import ingest
from pipeline.steps.retrieval import embedder_settings, publish
from pipeline.steps.tokens import tokenize
from pipeline.steps.training import train_token_embedder as train_embedder
from pipeline.store import db, reports
from pipeline.store.tables import retrieval_metrics, run_errors, runs, tracks

ENV = {
    "CLOUDTUNE__RVQ__LEVELS": "3", "CLOUDTUNE__RVQ__CODEBOOK_SIZE": "16", "CLOUDTUNE__RVQ__KMEANS_ITERS": "8",
    "CLOUDTUNE__QUERIES__PER_TRACK": "2",
    "CLOUDTUNE__QUERIES__PLAN": "tiny",
    "CLOUDTUNE__QUERIES__PLANS": "{tiny: {lengths_s: [2, 5], sets: {clean: clean, pink0db: 'pink:0', telephone: telephone}}}",
    "CLOUDTUNE__LATENCY__SINGLE_QUERIES": "4", "CLOUDTUNE__LATENCY__BATCH_SIZE": "8",
    "CLOUDTUNE__IVFPQ__M": "8", "CLOUDTUNE__HNSW__M": "8",
    "CLOUDTUNE__EVALUATION__EMBEDDERS": "[mel-stats, contrastive]",  # the fingerprint's own run is in test_fingerprint.py
}
SETS = [f"{length}/{d}" for length in ("2s", "5s") for d in ("clean", "pink0db", "telephone")]
SEARCH = config.SearchSettings(segments_k=1000, match_k=100, match_drift=1, rates=(1.0,), rates_max_s=2.0, rate_penalty=0.05,
                               min_query_segments=1, query_hop_steps=1, top_k=10, hub_penalty=0.0)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """10 demo tracks, tiny rvq tokens, a 1-epoch tiny embedder (run r1), evaluated and published."""
    root = tmp_path_factory.mktemp("retrieval")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLOUDTUNE_HOME", str(root / "home"))
        mp.delenv("CLOUDTUNE_DB_URL", raising=False)
        for key, value in ENV.items():
            mp.setenv(key, value)
        cfg = root / "train.yaml"
        cfg.write_text(yaml.safe_dump({
            "embedder": {"embedding_dim": 32, "hidden": 64, "layers": 1, "heads": 2, "dropout": 0.1, "max_frames": 64},
            "training": {"epochs": 1, "batch_size": 16, "lr": 2e-3, "clip_seconds": 2.0, "clips_per_track": 4, "val_queries_per_track": 2,
                         "num_workers": 0},
            "splits": {"val_ratio": 0.2, "test_ratio": 0.2, "seed": 1, "group_by": None}}))
        src = build_catalog(root / "src", tracks=10, seconds=8, seed=7, sample_rate=44100, channels=2, shared_motif_ratio=0.5)
        ingest([src], catalog="c", workers=1, progress=False)
        tokens = tokenize("rvq", "c", progress=False).output_root
        train_embedder(tokens, run_id="r1", config_path=cfg, device="cpu", progress=False)
        result = evaluate("r1", device="cpu", progress=False)
        published_record = publish("r1")  # publishing is a step of its own (the DAG's publish task)
        db.dispose_engines()
    return {"root": root, "home": root / "home", "src": src, "result": result, "published": published_record}


@pytest.fixture
def run_env(built, tmp_path, monkeypatch):
    """A private copy of the built CLOUDTUNE_HOME (tests may change it)."""
    home = tmp_path / "home-copy"
    shutil.copytree(built["home"], home)
    monkeypatch.setenv("CLOUDTUNE_HOME", str(home))
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    return home


def test_evaluate_writes_the_full_metric_table(built, run_env):
    result = built["result"]
    assert built["published"]["run_id"] == "r1" and not result["skipped"]
    with db.connect() as conn:
        rows = conn.execute(select(retrieval_metrics).where(retrieval_metrics.c.run_id == "r1")).mappings().all()
        status = dict(conn.execute(select(runs.c.kind, runs.c.status).where(runs.c.kind == "evaluate")).all())
    assert status == {"evaluate": "succeeded"}
    got = {(r["embedder"], r["index_kind"], r["query_set"], r["metric"], r["k"]): r["value"] for r in rows}
    for emb in ("mel-stats", "contrastive"):
        for kind in ("flat", "hnsw", "ivfpq"):
            for qset in SETS:
                m = got[(emb, kind, qset, "mrr", 0)]
                r1, r10, r100 = (got[(emb, kind, qset, "recall", k)] for k in (1, 10, 100))
                assert 0 <= r1 <= m <= 1 and r1 <= r10 <= r100 <= 1
                assert got[(emb, kind, qset, "queries", 0)] == 4  # 2 test tracks x 2 clips
                assert 0 <= got[(emb, kind, qset, "offset_hit", 0)] <= r1  # the right track at the right place
            for metric in ("latency_e2e_p50_ms", "latency_e2e_p95_ms", "latency_search_p50_ms", "latency_search_p95_ms", "qps_batch"):
                assert got[(emb, kind, "latency/5s", metric, 0)] > 0
            assert got[(emb, kind, "latency/5s", "latency_e2e_p95_ms", 0)] >= got[(emb, kind, "latency/5s", "latency_search_p95_ms", 0)]
        assert got[(emb, "hnsw", "all", "recall_vs_exact", 10)] == pytest.approx(1.0)  # a tiny graph is searched exhaustively
        assert 0 < got[(emb, "ivfpq", "all", "recall_vs_exact", 10)] <= 1
        assert got[(emb, "flat", "5s/clean", "recall", 1)] == 1.0  # a clean clip finds its track
    choice = json.loads((run_env / "runs" / "r1" / "reports" / "evaluation.json").read_text())["choice"]
    assert choice == result["choice"] and choice["criterion"] == "worst degraded Recall@1 at 5 s queries"
    report = (run_env / "runs" / "r1" / "reports" / "evaluation.html").read_text()
    assert report.count("<img") == 6 and "5s queries" in report and "pink0db" in report  # + the recall-against-length plot
    assert f"Catalog map ({choice['embedder']}" in report  # the map is of the embedder the run publishes
    assert "<h2>Recall against query length</h2>" in report and report.index("Published by merit") < report.index("Recall against query length")
    assert f"Published by merit: {choice['embedder']} / {choice['index_kind']}</h2>" in report
    assert "<h2>Embedder training</h2>" in report  # the run's training curve
    with db.connect() as conn:
        latents = conn.execute(text("SELECT COUNT(*), COUNT(DISTINCT catalog) FROM vae_latents WHERE run_id = 'r1'")).one()
    assert tuple(latents) == (10, 1)  # one row per indexed track
    assert published()["run_id"] == "r1" and (published()["embedder"], published()["index_kind"]) == (choice["embedder"], choice["index_kind"])
    assert published()["reason"] == f"by merit: {choice['reason']}"


def test_query_sets_without_their_background_sound_are_skipped_with_the_reason(built, run_env, monkeypatch, tmp_path):
    from pipeline.audio.fixtures import write_background

    monkeypatch.setenv("CLOUDTUNE__QUERIES__PLANS", "{tiny: {lengths_s: [2], sets: {clean: clean, bg5: 'background:5+telephone'}}}")
    monkeypatch.setenv("CLOUDTUNE__QUERIES__BACKGROUND_DIR", str(tmp_path / "background"))  # absolute: used as it is
    monkeypatch.setenv("CLOUDTUNE__EVALUATION__CATALOG_VAE", "false")
    result = evaluate("r1", embedders=["mel-stats"], index_kinds=["flat"], device="cpu", progress=False)
    why = f"'background:5+telephone' needs real background sound but {tmp_path / 'background'} does not exist (bench/fetch_background.py fetches it)"
    assert result["skipped_sets"] == {"bg5": why} and not result["skipped"]
    assert {r["query_set"] for r in result["rows"]} == {"2s/clean", "latency/2s", "all"}  # all: the gallery's size
    assert json.loads(paths.evaluation_json("r1").read_text())["skipped_sets"] == {"bg5": why}
    assert f"<b>query set bg5 skipped:</b> {html.escape(why)}" in Path(result["report"]).read_text()
    write_background(tmp_path / "background", count=2, seconds=4.0)  # generated "recordings": now the set runs
    result = evaluate("r1", embedders=["mel-stats"], index_kinds=["flat"], device="cpu", progress=False)
    assert not result["skipped_sets"] and {"2s/clean", "2s/bg5"} <= {r["query_set"] for r in result["rows"]}


def test_an_evaluation_is_reused_only_while_queries_are_cut_and_matched_the_same_way(built, run_env, monkeypatch):
    monkeypatch.setenv("CLOUDTUNE__QUERIES__PLANS", "{tiny: {lengths_s: [2], sets: {clean: clean}}}")
    monkeypatch.setenv("CLOUDTUNE__EVALUATION__CATALOG_VAE", "false")
    first = evaluate("r1", embedders=["mel-stats"], index_kinds=["flat"], device="cpu", progress=False)
    again = evaluate("r1", embedders=["mel-stats"], index_kinds=["flat"], device="cpu", progress=False)
    assert not first.get("reused") and again["reused"]
    steps = 3 - config.load_index()["search"].query_hop_steps  # the other of 1 and 2: another way of cutting queries, other figures
    monkeypatch.setenv("CLOUDTUNE__SEARCH__QUERY_HOP_STEPS", str(steps))
    redone = evaluate("r1", embedders=["mel-stats"], index_kinds=["flat"], device="cpu", progress=False)
    assert not redone.get("reused")
    assert json.loads(paths.evaluation_json("r1").read_text())["config"]["search"]["query_hop_steps"] == steps


def test_segments_cover_the_track_and_its_tail():
    class S:
        window_s, hop_s, min_s = 5.0, 1.0, 1.0

    spans = segment_starts(8 * 10 + 5, 10, S)  # 8.5 s at 10 Hz
    assert spans[0] == (0, 50) and spans[-1] == (35, 85) and all(b - a == 50 for a, b in spans)
    assert segment_starts(30, 10, S) == [(0, 30)] and segment_starts(5, 10, S) == []


def test_flat_index_ranks_tracks_like_brute_force():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    segment_track = rng.integers(0, 40, 300)
    queries = vectors[:25] + 0.3 * rng.normal(size=(25, 16)).astype(np.float32)
    index, _ = make_index("flat", vectors, {})
    settings = replace(SEARCH, segments_k=300)
    idx = TrackIndex(index, {}, np.array([f"t{i}" for i in range(40)]), segment_track, settings)
    results = idx.search(queries, top_k=5)
    scores = queries @ vectors.T
    for q, hits in enumerate(results):
        best = {t: scores[q, segment_track == t].max() for t in np.unique(segment_track)}
        expected = sorted(best, key=lambda t: -best[t])[:5]
        assert [t for t, _ in hits] == [f"t{t}" for t in expected]
        assert [s for _, s in hits] == pytest.approx([best[t] for t in expected], abs=1e-5)


class IVF:  # configs/index.yaml ivfpq, as a test sets it
    nlist_per_sqrt_n, m, nbits, nprobe, train_per_list, kmeans_iters, refine, refine_k_factor = 8.0, 32, 8, 16, 64, 10, "sq8", 4.0


@pytest.mark.parametrize("n", [1_000, 100_000, 1_000_000, 10_000_000])
def test_ivfpq_nlist_follows_the_faiss_guideline(n):
    p = ivfpq_params(n, 256, IVF)
    assert p["nlist"] <= n // 39 and p["nlist"] <= 16 * n**0.5
    if n >= 100_000:
        assert 4 * n**0.5 <= p["nlist"] and p["nbits"] == 8
    with pytest.raises(ValueError, match="divide"):
        ivfpq_params(n, 100, IVF)


@pytest.mark.parametrize("n", [1_000, 20_000, 1_000_000, 10_000_000])
def test_ivfpq_trains_on_a_sample_of_a_large_catalog(n):
    """k-means over every vector costs O(N * nlist) an iteration: a large catalog trains on train_per_list vectors per list."""
    p = ivfpq_params(n, 128, IVF)
    assert p["train_points"] == min(n, max(p["nlist"], 2 ** p["nbits"]) * IVF.train_per_list)
    assert (p["train_points"] < n) == (n >= 1_000_000) and p["kmeans_iters"] == 10
    assert p["refine"] == "sq8" and p["refine_k_factor"] == 4.0


def test_a_training_sample_is_distinct_rows_in_catalog_order():
    x = np.arange(2000, dtype=np.float32).reshape(1000, 2)
    sample = training_sample(x, 100, seed=3)
    rows = sample[:, 0].astype(int) // 2
    assert sample.shape == (100, 2) and len(set(rows)) == 100 and (np.diff(rows) > 0).all()
    assert np.array_equal(sample, training_sample(x, 100, seed=3)) and not np.array_equal(sample, training_sample(x, 100, seed=4))
    assert np.array_equal(training_sample(x, 5000), x)  # a small catalog trains on all of it


def _unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("refine", ["none", "flat", "sq8"])
def test_ivfpq_refine_builds_searches_and_round_trips(refine, tmp_path):
    x, q = _unit(4000, 32, 0), _unit(20, 32, 1)
    s = {"ivfpq": type("S", (IVF,), {"m": 8, "nlist_per_sqrt_n": 4.0, "train_per_list": 39, "refine": refine, "refine_k_factor": 3.0})}
    index, params = make_index("ivfpq", x, s)
    assert index.ntotal == 4000 and params["nlist"] == 102 and params["train_points"] == 102 * 39 and params["refine"] == refine
    assert isinstance(index, {"none": faiss.IndexIVFPQ, "flat": faiss.IndexRefineFlat, "sq8": faiss.IndexRefine}[refine])
    assert ("refine_k_factor" in params) == (refine != "none")
    scores, ids = search(index, q, 10)
    assert ids.shape == (20, 10) and (ids >= 0).all() and (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    single = [search(index, v[None], 10)[1][0] for v in q]  # one query on one thread, as the service asks
    assert np.array_equal(np.stack(single), ids)
    path = tmp_path / "index.faiss"
    faiss.write_index(index, str(path))
    loaded = faiss.read_index(str(path))
    assert np.array_equal(search(loaded, q, 10)[1], ids)  # refine index, k_factor and nprobe all come back
    if refine != "none":
        assert loaded.k_factor == 3.0 and faiss.downcast_index(loaded.base_index).nprobe == params["nprobe"]
    exact = np.argsort(-(q @ x.T), axis=1)[:, :10]
    set_search_params(index, {"nprobe": params["nlist"], "refine_k_factor": 400})  # every list, a shortlist of the whole catalog
    found = search(index, q, 10)[1]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(found, exact, strict=True)])
    assert recall == {"flat": 1.0, "sq8": pytest.approx(1.0, abs=0.05), "none": pytest.approx(0.6, abs=0.4)}[refine]


def test_hnsw_search_params_apply():
    index, params = make_index("hnsw", _unit(500, 16, 0), {"hnsw": config.load_index()["hnsw"]})
    set_search_params(index, {"ef_search": 7, "nprobe": 3})  # nprobe means nothing to HNSW
    assert index.hnsw.efSearch == 7 and params["ef_search"] == config.load_index()["hnsw"].ef_search


def test_a_refined_ivfpq_index_is_saved_with_its_params_and_loads(run_env):
    """The evaluation built ivfpq with the configured refine step: the manifest records it and load_index reads it back whole."""
    mel = get_embedder("mel-stats", **embedder_settings())
    manifest = json.loads((run_env / "runs" / "r1" / "index" / "mel-stats" / "ivfpq" / "manifest.json").read_text())
    s = config.load_index()["ivfpq"]
    assert {k: manifest["params"][k] for k in ("refine", "refine_k_factor", "kmeans_iters")} == {
        "refine": s.refine, "refine_k_factor": s.refine_k_factor, "kmeans_iters": s.kmeans_iters}
    assert 0 < manifest["params"]["train_points"] <= manifest["count"]
    loaded = load_index("r1", mel.manifest(), "ivfpq", SEARCH)
    assert isinstance(loaded.index, faiss.IndexRefine) and loaded.index.k_factor == s.refine_k_factor
    vectors = faiss.downcast_index(loaded.index.refine_index).reconstruct_n(0, 3)
    assert [hits[0][0] for hits in loaded.search_indices(vectors, 1)] == list(loaded.segment_track[:3])  # a segment finds its track


def test_an_index_refuses_another_embedder_and_stale_embeddings(run_env):
    mel = get_embedder("mel-stats", **embedder_settings())
    assert load_index("r1", mel.manifest(), "flat", SEARCH).index.ntotal > 0
    with pytest.raises(ValueError, match="built for embedder version"):
        load_index("r1", {**mel.manifest(), "version": "other"}, "flat", SEARCH)
    manifest = run_env / "runs" / "r1" / "embeddings" / "mel-stats" / "manifest.json"
    m = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**m, "created_at": "2030-01-01T00:00:00"}))
    with pytest.raises(ValueError, match="rebuild the index"):
        load_index("r1", mel.manifest(), "flat", SEARCH)
    build_index("r1", "mel-stats", "flat", config.load_index())
    assert load_index("r1", mel.manifest(), "flat", SEARCH).index.ntotal == m["count"]


def test_embed_catalog_is_idempotent_and_embeds_only_new_tracks(run_env, built, tmp_path):
    mel = get_embedder("mel-stats", **embedder_settings())
    before = json.loads((run_env / "runs" / "r1" / "embeddings" / "mel-stats" / "manifest.json").read_text())
    segments, hubs = config.load_index().segments, config.load_index().hubs
    assert embed_catalog("r1", mel, settings=segments, hubs=hubs, progress=False)["created_at"] == before["created_at"]  # up to date: nothing rewritten
    extra = build_catalog(tmp_path / "extra", tracks=1, seconds=6, seed=99, sample_rate=44100, channels=2, shared_motif_ratio=0.5)
    ingest([extra], catalog="c", workers=1, progress=False)
    after = embed_catalog("r1", mel, settings=segments, hubs=hubs, progress=False)
    assert after["tracks"] == before["tracks"] + 1 and after["reused_tracks"] == before["tracks"]
    assert after["count"] > before["count"]
    broken = build_catalog(tmp_path / "broken", tracks=1, seconds=6, seed=98, sample_rate=44100, channels=2, shared_motif_ratio=0.5)
    ingest([broken], catalog="c", workers=1, progress=False)
    (track,) = [t for t in catalog_tracks(["c"]) if t.track_id not in after["track_ids"]]
    kept = track.audio_path.read_bytes()
    track.audio_path.write_bytes(b"damaged")
    try:  # a track that keeps failing: an error row each time, the embeddings (and the indexes built from them) left alone
        for _ in range(2):
            assert embed_catalog("r1", mel, settings=segments, hubs=hubs, progress=False)["created_at"] == after["created_at"]
        with db.connect() as conn:
            failed = conn.execute(select(run_errors.c.item).where(run_errors.c.stage == "embed-catalog/mel-stats")).scalars().all()
        assert failed.count(track.track_id) == 2
    finally:
        track.audio_path.write_bytes(kept)
    assert embed_catalog("r1", mel, settings=segments, hubs=hubs, progress=False)["tracks"] == after["tracks"] + 1  # mended: embedded


def test_query_confusions_scores_the_evaluations_clips_and_names_the_tracks_that_draw_wrong_answers(run_env, capsys, monkeypatch):
    """bench/query_confusions.py searches the evaluation's own clips: its Recall@1 is the evaluation's."""
    spec = importlib.util.spec_from_file_location("bench_confusions", config.PROJECT_ROOT / "bench" / "query_confusions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr("sys.argv", ["query_confusions.py", "--home", str(run_env), "--run-id", "r1", "--embedder", "mel-stats",
                                     "--set", "clean", "--set", "pink0db", "--length", "5"])
    assert module.main() == 0
    out = capsys.readouterr().out
    with db.connect() as conn:
        rows = conn.execute(select(retrieval_metrics.c.query_set, retrieval_metrics.c.value).where(
            retrieval_metrics.c.run_id == "r1", retrieval_metrics.c.embedder == "mel-stats", retrieval_metrics.c.index_kind == "flat",
            retrieval_metrics.c.metric == "recall", retrieval_metrics.c.k == 1)).all()
    recall = dict(rows)
    for name in ("clean", "pink0db"):
        line = next(x for x in out.splitlines() if x.startswith(f"5s/{name}: "))
        assert float(line.split("R@1 ")[1].split(",")[0]) == pytest.approx(recall[f"5s/{name}"], abs=1e-3)
        missed = int(line.split("; ")[1].split(" missed")[0])
        drawn = [int(x.split()[0]) for x in out.split(f"5s/{name}: ")[1].split("\n\n")[0].splitlines()[1:]]
        assert sum(drawn) <= missed and all(d > 0 for d in drawn)


def _clip(src, name, start_s, seconds, out):
    wave, sr = sf.read(src / name)
    sf.write(out, wave[int(start_s * sr) : int((start_s + seconds) * sr)], sr)
    return str(out)


def test_search_answers_a_batch_of_clips_with_json_lines(run_env, built, tmp_path, capsys):
    src = built["src"]
    good1 = _clip(src, "track_0002.flac", 1.5, 4.0, tmp_path / "a.wav")
    good2 = _clip(src, "track_0006.flac", 3.0, 3.0, tmp_path / "b.flac")
    (tmp_path / "bad.wav").write_bytes(b"RIFF but not really audio")
    short = _clip(src, "track_0001.flac", 0, 0.2, tmp_path / "short.wav")
    clips = [good1, str(tmp_path / "missing.wav"), str(tmp_path / "bad.wav"), good2, short]
    assert main(["search", *clips, "--json", "--top-k", "4"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["query"] for line in lines] == clips  # one line per clip, in order, paths as given
    with db.connect() as conn:
        uri = dict(conn.execute(select(tracks.c.track_id, tracks.c.source_uri)).all())
    for line, name in ((lines[0], "track_0002.flac"), (lines[3], "track_0006.flac")):
        results = line["results"]
        assert [r["rank"] for r in results] == [1, 2, 3, 4]
        assert len({r["track_id"] for r in results}) == 4  # each track at most once
        assert results[0]["source_uri"].endswith(name) and uri[results[0]["track_id"]] == results[0]["source_uri"]
        assert all(a["score"] >= b["score"] for a, b in zip(results, results[1:], strict=False))
        assert all(0 <= r["offset_s"] <= 8 for r in results)  # where the clip starts in each track (8 s tracks)
    assert "no such file" in lines[1]["error"] and "not a readable audio file" in lines[2]["error"] and "at least" in lines[4]["error"]
    assert main(["search", str(tmp_path / "missing.wav"), "--json"]) == 1  # nothing answered: the command failed


def test_search_finds_where_a_clip_starts_with_the_segmentation_its_catalog_was_cut_by(run_env, built, tmp_path, monkeypatch, capsys):
    """A catalog cut into 1 s windows every 0.5 s (as the fingerprint embedder cuts its own): search reads that from the embeddings
    manifest, not from configs/index.yaml (5 s windows), cuts a 3 s clip into 5 segments and finds its track and offset."""
    monkeypatch.setenv("CLOUDTUNE__SEGMENTS__WINDOW_S", "1.0")
    monkeypatch.setenv("CLOUDTUNE__SEGMENTS__HOP_S", "0.5")
    monkeypatch.setenv("CLOUDTUNE__SEGMENTS__MIN_S", "0.5")
    mel = get_embedder("mel-stats", **embedder_settings())
    manifest = embed_catalog("r1", mel, settings=config.load_index()["segments"], hubs=config.load_index().hubs, progress=False)
    assert manifest["segmentation"]["window_s"] == 1.0
    build_index("r1", "mel-stats", "flat", config.load_index())
    for key in ("WINDOW_S", "HOP_S", "MIN_S"):
        monkeypatch.delenv(f"CLOUDTUNE__SEGMENTS__{key}")  # search must not take the config's 5 s windows
    src = built["src"]
    clips = [(_clip(src, name, start, 3.0, tmp_path / f"{i}.wav"), name, start)
             for i, (name, start) in enumerate([("track_0004.flac", 2.3), ("track_0008.flac", 4.0), ("track_0001.flac", 0.0)])]
    assert main(["search", *(c for c, _, _ in clips), "--json", "--top-k", "3", "--run-id", "r1", "--embedder", "mel-stats", "--kind", "flat"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for line, (_, name, start) in zip(lines, clips, strict=True):
        top = line["results"][0]
        assert top["source_uri"].endswith(name) and abs(top["offset_s"] - start) <= 0.5, line
        assert all(isinstance(r["offset_s"], float) and r["offset_s"] >= 0 for r in line["results"])
    assert main(["search", clips[0][0], "--top-k", "1", "--run-id", "r1", "--embedder", "mel-stats", "--kind", "flat"]) == 0
    assert f" at {lines[0]['results'][0]['offset_s']:.2f} s " in capsys.readouterr().out  # the console shows the offset too


def test_a_failed_evaluation_never_replaces_the_published_run(run_env):
    run2 = run_env / "runs" / "r2"
    shutil.copytree(run_env / "runs" / "r1" / "splits", run2 / "splits")  # splits but no trained embedder
    with pytest.raises(RuntimeError, match="no embedder could be evaluated"):
        evaluate("r2", embedders=["contrastive"], progress=False)
    assert published()["run_id"] == "r1"
    with pytest.raises(RuntimeError, match="no finished evaluation"):
        publish("r2")
    with db.connect() as conn:
        failed = conn.execute(select(runs.c.status, runs.c.message).where(runs.c.kind == "evaluate", runs.c.status == "failed")).all()
    assert len(failed) == 1 and "no trained embedder" in failed[0].message
    evaluate("r2", embedders=["mel-stats"], index_kinds=["flat"], progress=False)
    publish("r2")
    assert published()["run_id"] == "r2" and published()["embedder"] == "mel-stats"
    assert published()["previous"]["run_id"] == "r1"
    assert published()["index_kind"] == "flat" and "the only candidate" in published()["reason"]  # no ANN index: flat, and the reason says so
    assert "Note: the run has none of publish.index_kinds (hnsw, ivfpq)" in published()["reason"]
    with db.connect() as conn:
        steps = conn.execute(select(runs.c.status, runs.c.message).where(runs.c.kind == "publish", runs.c.parent_run_id == "r2")
                             .order_by(runs.c.started_at)).all()
    assert [s.status for s in steps] == ["failed", "succeeded"] and "no finished evaluation" in steps[0].message
    assert steps[1].message.startswith("published mel-stats/flat: by merit: mel-stats/flat has the best worst degraded Recall@1")


def test_publish_follows_the_choice_and_a_named_embedder_or_kind_wins(run_env, built, capsys):
    choice = built["result"]["choice"]
    assert built["published"]["embedder"] == choice["embedder"] and built["published"]["index_kind"] == choice["index_kind"]
    assert choice["index_kind"] in ("hnsw", "ivfpq") and {c["index_kind"] for c in choice["candidates"]} == {"flat", "hnsw", "ivfpq"}
    other = next(e for e in ("mel-stats", "contrastive") if e != choice["embedder"])
    assert main(["publish", "--run-id", "r1", "--embedder", other]) == 0
    best_kind = next(c["index_kind"] for c in choice["candidates"] if c["embedder"] == other)  # its best-ranked kind
    assert (published()["embedder"], published()["index_kind"]) == (other, best_kind)
    assert published()["reason"].startswith(f"named by the caller (embedder {other}); {best_kind}: its best-ranked by the criterion")
    assert f"the evaluation's choice was {choice['embedder']}/{choice['index_kind']}" in published()["reason"]
    assert main(["publish", "--run-id", "r1", "--embedder", other, "--kind", "flat"]) == 0
    assert (published()["embedder"], published()["index_kind"]) == (other, "flat")
    assert f"publish: run r1: published {other}/flat: named by the caller (embedder {other}, index kind flat)" in capsys.readouterr().err
    assert main(["publish", "--run-id", "r1"]) == 0  # nothing named: by merit again
    assert (published()["embedder"], published()["index_kind"]) == (choice["embedder"], choice["index_kind"])
    with db.connect() as conn:
        messages = conn.execute(select(runs.c.message).where(runs.c.kind == "publish", runs.c.parent_run_id == "r1", runs.c.status == "succeeded")
                                .order_by(runs.c.started_at)).scalars().all()
    assert len(messages) == 4 and messages[-1] == f"published {choice['embedder']}/{choice['index_kind']}: by merit: {choice['reason']}"
    # search on the named run without --embedder/--kind serves the evaluation's choice
    from pipeline.search import Searcher

    searcher = Searcher(config.load_index(), "r1", embedder_settings=embedder_settings(), audio=config.load_pipeline().audio)
    assert (searcher.embedder.name, searcher.index_kind) == (choice["embedder"], choice["index_kind"])


def test_evaluate_command_prints_the_choice_and_its_reason(run_env, capsys):
    assert main(["evaluate", "--run-id", "r1", "--embedder", "mel-stats", "--kind", "hnsw", "--no-publish"]) == 0
    out = capsys.readouterr().out
    choice = json.loads((run_env / "runs" / "r1" / "reports" / "evaluation.json").read_text())["choice"]
    assert (choice["embedder"], choice["index_kind"]) == ("mel-stats", "hnsw")
    assert f"choice by merit (worst degraded Recall@1 at 5 s queries): mel-stats/hnsw, {choice['score']:.4f}" in out
    assert f"reason: {choice['reason']}" in out and "runner-up" not in choice["reason"]  # flat is not a candidate: hnsw is the only one


@pytest.mark.postgres
def test_evaluate_on_postgres(built, run_env, pg_url, monkeypatch):
    monkeypatch.setenv("CLOUDTUNE_DB_URL", pg_url)
    shutil.rmtree(run_env / "runs" / "r1" / "embeddings")  # embed and index again, recording the builds in PostgreSQL
    ingest([built["src"]], catalog="c", workers=1, progress=False)
    evaluate("r1", embedders=["mel-stats"], index_kinds=["flat", "hnsw"], progress=False)
    engine = create_engine(db.normalize_url(pg_url))
    with engine.connect() as conn:
        table = conn.execute(text("SELECT index_kind, query_set, value FROM retrieval_metrics WHERE run_id = 'r1' AND embedder = 'mel-stats' "
                                  "AND metric = 'recall' AND k = 1 ORDER BY index_kind, query_set")).all()
        builds = conn.execute(text("SELECT index_kind, n_vectors FROM index_builds WHERE run_id = 'r1'")).all()
    engine.dispose()
    assert [(k, q) for k, q, _ in table] == [(k, q) for k in ("flat", "hnsw") for q in sorted(SETS)]
    assert dict((k, q) for k, q, _ in table) and all(0 <= v <= 1 for *_, v in table)
    assert {k for k, _ in builds} == {"flat", "hnsw"}
    summary = reports.run_report("retrieval_summary", url=pg_url)
    assert set(summary.run_id) == {"r1"} and len(summary) == 2 * len(SETS) and summary.recall_at_10.between(0, 1).all()
    latency = reports.run_report("retrieval_latency", url=pg_url)
    assert list(latency.index_kind) == ["flat", "hnsw"] and (latency.search_p95_ms > 0).all()


def test_wav2vec2_is_a_row_set_when_a_model_is_given_and_skipped_otherwise(run_env, tmp_path, monkeypatch):
    from test_wav2vec2 import save_tiny

    result = evaluate("r1", embedders=["mel-stats", "wav2vec2"], index_kinds=["flat"], progress=False)
    assert "no model configured" in result["skipped"]["wav2vec2"] and {r["embedder"] for r in result["rows"]} == {"mel-stats"}
    monkeypatch.setenv("CLOUDTUNE__WAV2VEC2__MODEL", str(save_tiny(tmp_path / "w2v", layer_norm=True)))
    result = evaluate("r1", embedders=["wav2vec2"], index_kinds=["flat", "hnsw"], progress=False)
    rows = {(r["index_kind"], r["query_set"], r["metric"], r["k"]) for r in result["rows"] if r["embedder"] == "wav2vec2"}
    assert {("flat", q, "recall", 1) for q in SETS} <= rows and ("hnsw", "all", "recall_vs_exact", 10) in rows
    manifest = json.loads((run_env / "runs" / "r1" / "index" / "wav2vec2" / "flat" / "manifest.json").read_text())
    assert manifest["embedder"]["model"].endswith("w2v") and manifest["dim"] == get_embedder("wav2vec2", **embedder_settings()).dim


def test_search_brings_every_clip_to_the_catalog_level(run_env, built, tmp_path, capsys):
    """A clip recorded 30 dB quieter (or louder, with headroom) finds the same tracks with the same scores: search levels queries."""
    src = built["src"]
    loud = _clip(src, "track_0003.flac", 2.0, 4.0, tmp_path / "loud.wav")
    wave, sr = sf.read(loud)
    sf.write(tmp_path / "quiet.wav", wave * 10 ** (-30 / 20), sr, subtype="FLOAT")
    assert main(["search", loud, str(tmp_path / "quiet.wav"), "--json", "--top-k", "3"]) == 0
    a, b = (json.loads(line)["results"] for line in capsys.readouterr().out.splitlines())
    assert [r["track_id"] for r in a] == [r["track_id"] for r in b]
    assert [r["score"] for r in a] == pytest.approx([r["score"] for r in b], abs=1e-3)


def test_query_clips_come_from_the_source_files_at_their_own_level(run_env, built):
    from pipeline.audio import io as audio_io
    from pipeline.embed.catalog import catalog_tracks
    from pipeline.evaluate.queries import read_source

    track = catalog_tracks(["c"])[0]
    wave, from_source = read_source(track, 24000)
    source, _ = audio_io.load(audio_io.uri_to_path(track.source_uri), sr=24000)
    assert from_source and np.array_equal(wave, source)  # decoded as search decodes a clip: not the catalog's -20 dBFS copy
    assert abs(audio_io.rms_dbfs(wave) - audio_io.rms_dbfs(audio_io.load_canonical(track.audio_path)[0])) > 0.5
    gone = track.__class__(track.track_id, track.catalog, "file:///nonexistent/source.flac", track.audio_path, track.duration_s)
    wave, from_source = read_source(gone, 24000)
    assert not from_source and len(wave) == pytest.approx(track.duration_s * 24000, abs=2)  # the canonical copy, counted as such


def test_distractor_catalogs_are_indexed_but_never_queried(run_env, built, tmp_path):
    extra = build_catalog(tmp_path / "distractors", tracks=4, seconds=8, seed=31, sample_rate=44100, channels=2, shared_motif_ratio=0.5)
    ingest([extra], catalog="d", workers=1, progress=False)
    result = evaluate("r1", embedders=["mel-stats"], index_kinds=["flat"], distractors=["d"], progress=False)
    got = {(r["query_set"], r["metric"]): r["value"] for r in result["rows"] if r["index_kind"] == "flat"}
    assert got[("all", "gallery_tracks")] == 14 and got[("all", "gallery_distractor_tracks")] == 4
    assert got[("all", "gallery_vectors")] > 0 and got[("all", "gallery_hours")] == pytest.approx(14 * 8 / 3600, rel=0.05)
    assert got[("all", "queries_from_canonical")] == 0  # every query clip was cut from its source file
    assert got[("5s/clean", "queries")] == 4  # the same 2 test tracks x 2 clips: distractors are never queried
    assert set(result["seconds"]) >= {"embed and index", "query clips", "score query sets", "latency"}
    assert json.loads((run_env / "runs" / "r1" / "reports" / "evaluation.json").read_text())["distractors"] == ["d"]
    with pytest.raises(ValueError, match="--distractors nope: no ingested tracks"):
        evaluate("r1", embedders=["mel-stats"], index_kinds=["flat"], distractors=["nope"], progress=False)
