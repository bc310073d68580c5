"""The Airflow DAGs on Airflow 3.3: integrity (parse, task ids, pools, queues, retries, params), `cloudtune airflow setup`,
and the real DAG runs through `dag.test()`: `cloudtune demo` on a tiny catalog with its metrics in PostgreSQL (asserted by
SQL; it publishes by merit), then `nightly_reindex`: a clean night publishes, a planted regression (the published embedder zeroed) fails it."""

import ast
import json
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from conftest import PG_URL, _with_search_path
from sqlalchemy import create_engine, text
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from pipeline import config
from pipeline.steps import bookkeeping, retrieval, training
from pipeline.store import db

CLOUDTUNE = str(Path(sys.executable).parent / "cloudtune")
DAGS = config.PROJECT_ROOT / "dags"
GPU_TASKS = {"audio_retrieval": {"tokenize", "train_embedder", "train_fingerprint", "wav2vec2_features", "embed_catalog", "evaluate"},
             "nightly_reindex": {"tokenize", "embed_catalog", "evaluate"},
             "dream_generator": {"train"},
             "asr_evaluation": {"evaluate"}}
TASKS = {
    "audio_retrieval": ["start", "ingest", "train_tokenizer", "plan_shards", "tokenize", "splits", "train_embedder", "train_fingerprint", "wav2vec2_features",
                        "embed_catalog", "build_indexes", "evaluate", "publish", "report"],
    "nightly_reindex": ["start", "prepare", "ingest", "tokenize", "embed_catalog", "build_indexes", "evaluate", "check_regression", "publish", "report"],
    "dream_generator": ["train"],
    "asr_evaluation": ["evaluate"],
}
TINY = {  # a 1-epoch, 32-wide embedder on a 16-code, 3-level codec; 2 query clips per test track under 3 degradations
    "CLOUDTUNE__RVQ__LEVELS": "3", "CLOUDTUNE__RVQ__CODEBOOK_SIZE": "16", "CLOUDTUNE__RVQ__KMEANS_ITERS": "8",
    "CLOUDTUNE__QUERIES__PER_TRACK": "2",
    "CLOUDTUNE__QUERIES__PLAN": "tiny", "CLOUDTUNE__DEMO__QUERY_PLAN": "tiny",  # `cloudtune demo` passes demo.query_plan
    "CLOUDTUNE__QUERIES__PLANS": "{tiny: {lengths_s: [2, 5], sets: {clean: clean, pink0db: 'pink:0', telephone: telephone}}}",
    "CLOUDTUNE__LATENCY__SINGLE_QUERIES": "4", "CLOUDTUNE__LATENCY__BATCH_SIZE": "8",
    "CLOUDTUNE__IVFPQ__M": "8", "CLOUDTUNE__HNSW__M": "8",
    "CLOUDTUNE__EMBEDDER__HIDDEN": "64", "CLOUDTUNE__EMBEDDER__LAYERS": "1", "CLOUDTUNE__EMBEDDER__HEADS": "2",
    "CLOUDTUNE__EMBEDDER__MAX_FRAMES": "64", "CLOUDTUNE__TRAINING__BATCH_SIZE": "16", "CLOUDTUNE__TRAINING__CLIP_SECONDS": "2.0",
    "CLOUDTUNE__TRAINING__CLIPS_PER_TRACK": "4", "CLOUDTUNE__TRAINING__VAL_QUERIES_PER_TRACK": "2",
    "CLOUDTUNE__SPLITS__VAL_RATIO": "0.2", "CLOUDTUNE__SPLITS__TEST_RATIO": "0.2",
    "CLOUDTUNE__DAG__MIN_TRACKS_PER_SHARD": "4",  # 8 tracks -> 2 tokenize shards
    "CLOUDTUNE__DAG__RETRY_DELAY_S": "1",
    "CLOUDTUNE__FINGERPRINT__CHANNELS": "[8, 16, 32, 32, 64, 64]", "CLOUDTUNE__FINGERPRINT__DIM": "32", "CLOUDTUNE__FINGERPRINT__HEAD_HIDDEN": "8",
    "CLOUDTUNE__FINGERPRINT_TRAINING__BATCH_SIZE": "24", "CLOUDTUNE__FINGERPRINT_TRAINING__NUM_WORKERS": "0",
    "CLOUDTUNE__FINGERPRINT_TRAINING__VAL_QUERIES_PER_TRACK": "4", "CLOUDTUNE__AUGMENT__RIR_BANK": "2",
    "CLOUDTUNE__DAG__FINGERPRINT_EPOCHS": "1", "CLOUDTUNE__DEMO__FINGERPRINT_EPOCHS": "1",
}  # training.num_workers stays 1: a forked DataLoader worker after FAISS ran in the same dag.test() process (it used to hang)
TINY_WAV2VEC2 = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16, 16), conv_stride=(5, 4, 4),
                     conv_kernel=(10, 4, 4), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)


# --- integrity ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    """Airflow configured once for this process (AIRFLOW_HOME in a temp dir), the dags/ folder parsed."""
    os.environ["AIRFLOW_HOME"] = str(tmp_path_factory.mktemp("airflow-home"))
    from pipeline.airflow_local import dag_bag

    return dag_bag()


def test_dags_parse_without_errors_with_the_expected_tasks(bag):
    assert bag.import_errors == {}
    assert set(bag.dags) == set(TASKS)
    for dag_id, task_ids in TASKS.items():
        dag = bag.dags[dag_id]
        assert sorted(dag.task_ids) == sorted(task_ids), dag_id
        assert "cloudtune" in dag.tags and dag.doc_md
        for task in dag.tasks:
            gpu = task.task_id in GPU_TASKS[dag_id]
            assert (task.pool, task.queue) == (("gpu", "gpu") if gpu else ("default_pool", "default")), (dag_id, task.task_id)
            expected_retries = 0 if task.task_id == "check_regression" else config.load_airflow()["dag"].retries
            assert task.retries == expected_retries, (dag_id, task.task_id)


def test_tokenize_is_mapped_and_publish_updates_the_published_index_asset(bag):
    retrieval = bag.dags["audio_retrieval"]
    assert type(retrieval.get_task("tokenize")).__name__.endswith("MappedOperator")
    assert retrieval.get_task("tokenize").upstream_task_ids == {"plan_shards"}
    for dag_id in ("audio_retrieval", "nightly_reindex"):
        outlets = bag.dags[dag_id].get_task("publish").outlets
        assert [a.name for a in outlets] == ["cloudtune_published_index"]
    assert retrieval.get_task("wav2vec2_features").upstream_task_ids == {"start", "splits"}
    build = retrieval.get_task("build_indexes")
    assert build.upstream_task_ids == {"start", "embed_catalog", "wav2vec2_features"} and build.trigger_rule == "none_failed"
    assert bag.dags["nightly_reindex"].get_task("check_regression").upstream_task_ids == {"start", "evaluate"}
    assert bag.dags["nightly_reindex"].get_task("publish").upstream_task_ids >= {"check_regression"}


def test_params_form_defaults_come_from_configs(bag):
    d = config.load_airflow()["dag"]
    params = bag.dags["audio_retrieval"].params.dump()
    assert set(params) == {"catalog", "catalog_roots", "tokenizer_backend", "epochs", "embedding_dim", "fingerprint_epochs", "train_catalogs", "embedders",
                           "index_kinds", "distractors", "device", "max_shards", "run_id", "query_plan"}
    assert params["epochs"] == d.epochs and params["embedding_dim"] == d.embedding_dim and params["index_kinds"] == list(d.index_kinds)
    schema = bag.dags["audio_retrieval"].params.get_param("tokenizer_backend").schema
    assert schema["enum"] == ["rvq", "moss"]
    nightly = bag.dags["nightly_reindex"]
    assert nightly.timetable.expression == config.load_airflow()["nightly"].schedule
    assert nightly.params.dump()["max_recall_drop"] == config.load_airflow()["nightly"].max_recall_drop


def test_asr_evaluation_form_params_come_from_configs(bag):
    asr = config.load_asr()
    params = bag.dags["asr_evaluation"].params
    assert params.dump() == {"manifest": "", "backend": asr.asr.backend, "model": asr.qwen3_asr.model, "device": asr.qwen3_asr.device}
    assert params.get_param("backend").schema["enum"] == ["qwen3-asr", "pocketsphinx"]
    assert params.get_param("device").schema["enum"] == ["auto", "cpu", "cuda"]


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    return {n.module if isinstance(n, ast.ImportFrom) else n.names[0].name for n in top}


def test_dag_files_import_only_airflow_sdk_at_top_level():
    """Parsing a DAG file stays light: the Airflow SDK, the standard library and pipeline.names, which imports nothing
    (nor does the package it lives in); pipeline.config and the heavy modules load inside functions."""
    for path in DAGS.glob("*.py"):
        modules = _top_level_imports(path)
        assert modules <= {"__future__", "datetime", "airflow.sdk", "pipeline.names"}, (path.name, modules)
    for light in ("__init__.py", "names.py"):
        assert _top_level_imports(config.PROJECT_ROOT / "pipeline" / light) <= {"__future__"}, light


def test_airflow_setup_creates_the_gpu_pool(bag, capsys):
    from airflow.models.pool import Pool

    from pipeline.cli import main

    assert main(["airflow", "setup"]) == 0
    assert "gpu (" in capsys.readouterr().out
    assert Pool.get_pool("gpu").slots == max(1, torch.cuda.device_count())
    assert main(["airflow", "setup", "--gpu-slots", "3"]) == 0
    assert Pool.get_pool("gpu").slots == 3
    assert main(["airflow", "setup", "--gpu-slots", "0"]) == 2


def test_run_rejects_bad_conf_before_starting_airflow(capsys):
    from pipeline.cli import main

    assert main(["run", "--conf", "{epochs: 2"]) == 2
    assert "--conf: not valid JSON" in capsys.readouterr().err
    assert main(["run", "--conf", "[1, 2]"]) == 2
    assert "expected a JSON object of DAG params" in capsys.readouterr().err


def test_embed_step_skips_an_unavailable_embedder_but_not_all(capsys):
    with pytest.raises(RuntimeError, match="embed-catalog: no embedder could be built"):
        retrieval.embed_catalog("r", ["wav2vec2"], "cpu")  # no wav2vec2 model configured here
    assert "embed-catalog: skipping wav2vec2:" in capsys.readouterr().err


def test_wav2vec2_step_is_skipped_with_its_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path))
    with pytest.raises(retrieval.StepSkipped, match=r"wav2vec2 is not among the run's embedders \(mel-stats, contrastive\)"):
        retrieval.wav2vec2_features("r", ["mel-stats", "contrastive"], "cpu")
    with pytest.raises(retrieval.StepSkipped, match="wav2vec2: no model configured"):
        retrieval.wav2vec2_features("r", ["mel-stats", "wav2vec2"], "cpu")
    with pytest.raises(RuntimeError, match="run r: no catalog embeddings for any of mel-stats, wav2vec2"):
        retrieval.embedded("r", ["mel-stats", "wav2vec2"])
    assert retrieval.embed_catalog("r", [], "cpu") == {}  # the DAG's embed_catalog when wav2vec2 is the only embedder asked for


def test_pipeline_run_id_is_path_safe():
    assert bookkeeping.pipeline_run_id("manual__2026-01-02T03:04:05.678+00:00") == "manual__2026-01-02T03-04-05.678-00-00"
    assert bookkeeping.pipeline_run_id("scheduled__x", "my run/1") == "my-run-1"
    with pytest.raises(ValueError, match="nothing left"):
        bookkeeping.pipeline_run_id("::")


def test_train_config_checks_the_embedding_dim():
    path = training.train_config("r", 64)
    assert config.load_train(path).embedder.embedding_dim == 64
    with pytest.raises(ValueError, match="embedding_dim 30: must be a positive multiple of configs/train.yaml embedder.heads"):
        training.train_config("r", 30)


# --- real runs: demo on PostgreSQL, then the nightly re-index -------------------------------------------


def _cloudtune(env, *args):
    return subprocess.run([CLOUDTUNE, *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def chain(pg_admin, tmp_path_factory):
    """`cloudtune demo` (8 tracks x 6 s) against a fresh PostgreSQL schema, then nightly-1 (2 new tracks), then the published
    embedder is zeroed and nightly-2 runs. Each is a separate `cloudtune` process with its own dag.test() run."""
    root = tmp_path_factory.mktemp("dag-chain")
    schema = f"ct_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = _with_search_path(PG_URL, schema)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CLOUDTUNE"))}
    wav2vec2 = root / "wav2vec2-tiny"  # a tiny random model of the real architecture: the demo's wav2vec2_features task runs
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(**TINY_WAV2VEC2)).save_pretrained(wav2vec2)
    Wav2Vec2FeatureExtractor().save_pretrained(wav2vec2)
    env.update(TINY, CLOUDTUNE_HOME=str(root / "home"), CLOUDTUNE_DB_URL=url, CLOUDTUNE__WAV2VEC2__MODEL=str(wav2vec2))
    out = {"root": root, "home": root / "home", "url": url, "env": env}
    out["demo"] = _cloudtune(env, "demo", "--tracks", "8", "--seconds", "6", "--epochs", "1", "--conf", '{"embedding_dim": 32}')
    assert out["demo"].returncode == 0, out["demo"].stdout[-3000:] + out["demo"].stderr[-3000:]
    out["run_id"] = re.search(r"succeeded \(pipeline run (\S+)\)", out["demo"].stdout).group(1)
    out["published0"] = json.loads((out["home"] / "published.json").read_text())
    out["choice0"] = json.loads((out["home"] / "runs" / out["run_id"] / "reports" / "evaluation.json").read_text())["choice"]
    # the planted regression below zeroes the contrastive checkpoint: name contrastive/hnsw (a named pair wins over the choice by merit)
    out["pin"] = _cloudtune(env, "publish", "--run-id", out["run_id"], "--embedder", "contrastive", "--kind", "hnsw")
    new = root / "new"
    assert _cloudtune(env, "demo-catalog", "--out", str(new), "--tracks", "2", "--seconds", "6", "--seed", "5").returncode == 0
    nightly = {"catalog_roots": [str(new)], "metric_k": 1, "max_recall_drop": 0.05}
    out["nightly1"] = _cloudtune(env, "run", "--dag", "nightly_reindex", "--catalog", "demo", "--conf", json.dumps({**nightly, "run_id": "nightly-1"}))
    out["published1"] = json.loads((out["home"] / "published.json").read_text())
    checkpoint = out["home"] / "runs" / "nightly-1" / "models" / "embedder.pt"  # plant the regression: a broken published embedder
    ckpt = torch.load(checkpoint, weights_only=False)
    for key in ("model", "ema_model"):  # the raw weights and, when training kept one, their moving average
        if key in ckpt:
            ckpt[key] = {k: torch.zeros_like(v) for k, v in ckpt[key].items()}
    torch.save(ckpt, checkpoint)
    out["nightly2"] = _cloudtune(env, "run", "--dag", "nightly_reindex", "--catalog", "demo", "--conf", json.dumps({**nightly, "run_id": "nightly-2"}))
    yield out
    db.dispose_engines()
    with pg_admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.mark.postgres
def test_demo_runs_the_real_dag_and_prints_the_metric_table(chain):
    stdout = chain["demo"].stdout
    assert "ingest: 8 tracks added" in stdout
    table = stdout.split("Retrieval metrics of run")[-1].splitlines()
    assert table[1].split() == ["embedder", "index_kind", "query_sets", "recall_at_1", "recall_at_10", "recall_at_100", "mrr"]
    assert sorted((r.split()[0], r.split()[1]) for r in table[2:14]) == sorted((e, k) for e in ("contrastive", "fingerprint", "mel-stats", "wav2vec2")
                                                                              for k in ("flat", "hnsw", "ivfpq"))
    # the Airflow metadata DB was created under CLOUDTUNE_HOME; tokenize ran as 2 mapped shards that covered all 8 tracks once
    with sqlite3.connect(chain["home"] / "airflow" / "airflow.db") as conn:
        states = conn.execute("SELECT task_id, map_index, state FROM task_instance WHERE dag_id = 'audio_retrieval'").fetchall()
    assert sorted(m for t, m, _ in states if t == "tokenize") == [0, 1] and {s for _, _, s in states} == {"success"}
    shards = [json.loads(p.read_text()) for p in (chain["home"] / "tokens" / "demo").glob("*/summary.shard-*-of-2.json")]
    assert sorted(s["written"] for s in shards) == [4, 4]


@pytest.mark.postgres
def test_demo_metrics_are_in_postgres(chain):
    engine = create_engine(db.normalize_url(chain["url"]))
    with engine.connect() as conn:
        kinds = conn.execute(text("SELECT embedder, index_kind, COUNT(*), MIN(value), MAX(value) FROM retrieval_metrics "
                                  "WHERE run_id = :r AND metric = 'recall' GROUP BY embedder, index_kind"), {"r": chain["run_id"]}).all()
        run = conn.execute(text("SELECT kind, status, config FROM runs WHERE run_id = :r"), {"r": chain["run_id"]}).one()
        epochs = conn.execute(text("SELECT COUNT(*) FROM training_epochs WHERE run_id = :r AND model = 'embedder'"), {"r": chain["run_id"]}).scalar()
        fp_epochs = conn.execute(text("SELECT COUNT(*) FROM training_epochs WHERE run_id = :r AND model = 'fingerprint'"), {"r": chain["run_id"]}).scalar()
    engine.dispose()
    assert {(e, k) for e, k, *_ in kinds} == {(e, k) for e in ("contrastive", "fingerprint", "mel-stats", "wav2vec2") for k in ("flat", "hnsw", "ivfpq")}
    assert all(n == 2 * 3 * 3 and 0 <= lo <= hi <= 1 for *_, n, lo, hi in kinds)  # 2 lengths x 3 degradations x Recall@1/10/100
    assert run.kind == "pipeline" and run.status == "succeeded" and run.config["epochs"] == 1 and run.config["embedding_dim"] == 32
    assert epochs == 1 and fp_epochs == 1  # demo.fingerprint_epochs (1 here)


@pytest.mark.postgres
def test_demo_publishes_by_merit_and_logs_the_reason(chain):
    choice, published = chain["choice0"], chain["published0"]
    assert (published["run_id"], published["embedder"], published["index_kind"]) == (chain["run_id"], choice["embedder"], choice["index_kind"])
    assert published["reason"] == f"by merit: {choice['reason']}" and choice["criterion"] == "worst degraded Recall@1 at 5 s queries"
    assert {c["embedder"] for c in choice["candidates"]} == {"mel-stats", "contrastive", "fingerprint", "wav2vec2"}
    logs = chain["demo"].stdout + chain["demo"].stderr  # the publish task's log
    assert f"publish: run {chain['run_id']}: published {choice['embedder']}/{choice['index_kind']}: by merit: {choice['reason']}" in logs
    engine = create_engine(db.normalize_url(chain["url"]))
    with engine.connect() as conn:
        steps = conn.execute(text("SELECT status, message FROM runs WHERE kind = 'publish' AND parent_run_id = :r ORDER BY started_at"),
                             {"r": chain["run_id"]}).all()
    engine.dispose()
    assert [s.status for s in steps] == ["succeeded", "succeeded"]  # the DAG's publish, then the named one
    assert steps[0].message == f"published {choice['embedder']}/{choice['index_kind']}: by merit: {choice['reason']}"
    assert chain["pin"].returncode == 0, chain["pin"].stderr[-2000:]
    assert steps[1].message.startswith("published contrastive/hnsw: named by the caller (embedder contrastive, index kind hnsw)")


@pytest.mark.postgres
def test_nightly_reindexes_new_tracks_and_publishes(chain):
    assert chain["nightly1"].returncode == 0, chain["nightly1"].stderr[-3000:]
    logs = chain["nightly1"].stdout + chain["nightly1"].stderr
    assert "ingest: 2 tracks added" in logs and "tokenize: 2 tracks tokenized (2 files), 8 already done" in logs
    manifest = json.loads((chain["home"] / "runs" / "nightly-1" / "embeddings" / "contrastive" / "manifest.json").read_text())
    assert manifest["tracks"] == 10
    assert chain["published1"]["run_id"] == "nightly-1"
    assert (chain["published1"]["embedder"], chain["published1"]["index_kind"]) == ("contrastive", "hnsw")  # the base run's pair, named
    assert chain["published1"]["reason"].startswith("named by the caller (embedder contrastive, index kind hnsw): worst degraded Recall@1")
    assert json.loads((chain["home"] / "runs" / "nightly-1" / "nightly.json").read_text())["base_run_id"] == chain["run_id"]


@pytest.mark.postgres
def test_nightly_fails_loudly_on_a_planted_regression(chain):
    p = chain["nightly2"]
    assert p.returncode == 1 and "failed tasks: check_regression" in p.stderr
    assert re.search(r"Recall@1 regression: contrastive/\w+ [0-9.]+ \(nightly-1\) -> [0-9.]+", p.stdout + p.stderr)
    assert json.loads((chain["home"] / "published.json").read_text())["run_id"] == "nightly-1"  # not replaced
    report = _cloudtune(chain["env"], "report", "regressions", "--param", "k=1", "--param", "max_drop=0.05", "--format", "json")
    rows = [r for r in json.loads(report.stdout) if r["run_id"] == "nightly-2"]
    assert rows and all(r["regression"] == 1 and r["previous_run_id"] == "nightly-1" and r["status"] == "failed" for r in rows)
    assert all(r["recall_drop"] > 0.05 for r in rows)


def test_dream_generator_dag_trains_on_digits_and_returns_the_json_result(bag, tmp_path, monkeypatch):
    from pipeline.airflow_local import run_dag

    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    done = run_dag("dream_generator", {"dataset": "digits", "epochs": 1, "out": "dreams/grid.png"})
    assert done["state"] == "success" and not done["failed_tasks"]
    assert (tmp_path / "home" / "dreams" / "grid.png").stat().st_size > 0
    failed = run_dag("dream_generator", {"dataset": "mnist", "data": "no-such-folder", "epochs": 1})
    assert failed["failed_tasks"] == ["train"]  # missing MNIST: bad input, failed without retries


def test_asr_evaluation_dag_scores_a_tiny_manifest(bag, tmp_path, monkeypatch):
    from test_asr_eval import speech_manifest

    from pipeline import paths
    from pipeline.airflow_local import run_dag

    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    speech_manifest(tmp_path / "home" / "speech")
    done = run_dag("asr_evaluation", {"manifest": "speech/eval.tsv", "backend": "pocketsphinx"})  # relative to CLOUDTUNE_HOME
    assert done["state"] == "success" and not done["failed_tasks"]
    run_id = bookkeeping.pipeline_run_id(done["dag_run_id"])
    with db.connect() as conn:
        rows = conn.execute(text("SELECT run_id, error FROM asr_results ORDER BY result_id")).all()
    assert [r.run_id for r in rows] == [run_id] * 3 and sum(r.error is not None for r in rows) == 1
    assert paths.asr_report(run_id).stat().st_size > 0
    failed = run_dag("asr_evaluation", {"manifest": "no-such.tsv", "backend": "pocketsphinx"})
    assert failed["failed_tasks"] == ["evaluate"]  # a bad manifest: failed without retries
