"""Idempotence (issue 18, faults): every task of `audio_retrieval` run twice in a row with the same run id adds no duplicate
row and rewrites no finished artifact. Two `cloudtune run` processes (dag.test()) on a tiny generated catalog with the metrics
in PostgreSQL; between them every file under CLOUDTUNE_HOME (size, mtime, content) and the rows of every table are snapshotted,
and whatever the second run changed is named with the task that owns it. What a re-run may change is listed in ALLOWED_*,
each with its reason."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from conftest import PG_URL, _with_search_path
from sqlalchemy import create_engine, func, or_, select, text
from test_airflow_dags import TINY, TINY_WAV2VEC2
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from pipeline.audio.synth import build_catalog
from pipeline.store import db
from pipeline.store.tables import metadata

pytestmark = [pytest.mark.faults, pytest.mark.postgres]

CLOUDTUNE = str(Path(sys.executable).parent / "cloudtune")
RUN = "idem-1"
CONF = {"catalog": "idem", "run_id": RUN, "epochs": 1, "fingerprint_epochs": 1, "embedding_dim": 32}

# Who writes what under CLOUDTUNE_HOME (relative paths, "{run}" the run id): the first matching prefix names the owner task.
FILE_OWNERS = (
    ("audio/", "ingest"),
    ("tokenizers/", "train_tokenizer"),
    ("tokens/", "tokenize"),
    ("runs/{run}/params.json", "start"),
    ("runs/{run}/splits/", "splits"),
    ("runs/{run}/train.yaml", "train_embedder"),
    ("runs/{run}/models/embedder", "train_embedder"),
    ("runs/{run}/models/training_curve", "train_embedder"),
    ("runs/{run}/models/fingerprint", "train_fingerprint"),
    ("runs/{run}/embeddings/wav2vec2/", "wav2vec2_features"),
    ("runs/{run}/embeddings/", "embed_catalog"),
    ("runs/{run}/index/", "build_indexes"),
    ("runs/{run}/reports/metrics.csv", "report"),
    ("runs/{run}/reports/", "evaluate"),
    ("published.json", "publish"),
)
# What a re-run may change, and why.
ALLOWED_FILES = {
    "airflow/": "Airflow's own metadata DB and task logs: the second run is a new DAG run, recorded by Airflow",
}
# Tables (and groups of rows) and the task that writes them.
TABLE_OWNERS = {
    "runs": "the step that records itself (see RUN_KIND_OWNERS)", "tracks": "ingest", "ingest_sources": "ingest", "ingest_errors": "ingest",
    "splits": "splits", "training_epochs": "train_embedder / train_fingerprint", "index_builds": "build_indexes",
    "retrieval_metrics": "evaluate", "run_metrics": "train_tokenizer / tokenize", "run_errors": "tokenize / embed_catalog / evaluate",
    "asr_results": "none (asr_evaluation)", "vae_latents": "none (cloudtune catalog-vae)",
}
RUN_KIND_OWNERS = {"pipeline": "start / report", "ingest": "ingest", "tokenizer_train": "train_tokenizer", "tokenize": "tokenize",
                   "splits": "splits", "train": "train_embedder / train_fingerprint", "evaluate": "evaluate", "publish": "publish"}
GROUP_BY = {"runs": "kind", "training_epochs": "model", "run_metrics": "stage", "retrieval_metrics": "embedder"}
# Columns a re-run may rewrite, and why: the DAG run's own `runs` row is started again (status running, a new started_at) by
# `start` and finished again by `report`; nothing else is compared on `runs` but its row count per kind.
ALLOWED_COLUMNS = {"runs": "the pipeline run's row records its latest DAG run (status, started_at, finished_at, message)"}
TIMESTAMPS = ("recorded_at", "built_at", "ingested_at", "seen_at", "occurred_at", "created_at")


def _cloudtune(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([CLOUDTUNE, *args], capture_output=True, text=True, env=env, timeout=900)


def _owner(rel: str) -> str:
    for prefix, task in FILE_OWNERS:
        if rel.startswith(prefix.format(run=RUN)):
            return task
    return "no task known (add it to FILE_OWNERS)"


def _files(home: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``home`` (hidden temporary files included): relative path -> (size, mtime_ns, sha256)."""
    out = {}
    for path in sorted(home.rglob("*")):
        if path.is_file():
            st = path.stat()
            out[path.relative_to(home).as_posix()] = (st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def _rows(url: str) -> dict[str, object]:
    """Per table: the row count overall and of the run (where the table has run_id; `runs`: the run and its steps), per group
    (GROUP_BY), and the newest timestamp of each timestamp column (a row rewritten in place moves it)."""
    engine = create_engine(db.normalize_url(url))
    out = {}
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            cols = table.c
            out[f"{table.name}: rows"] = conn.execute(select(func.count()).select_from(table)).scalar()
            if "run_id" in cols:
                mine = cols.run_id == RUN
                if table.name == "runs":
                    mine = or_(mine, cols.parent_run_id == RUN)
                out[f"{table.name}: rows of run {RUN}"] = conn.execute(select(func.count()).select_from(table).where(mine)).scalar()
            if table.name in GROUP_BY:
                group = cols[GROUP_BY[table.name]]
                for key, n in conn.execute(select(group, func.count()).group_by(group)).all():
                    out[f"{table.name}: rows of {GROUP_BY[table.name]} {key}"] = n
            if table.name not in ALLOWED_COLUMNS:
                for name in TIMESTAMPS:
                    if name in cols:
                        out[f"{table.name}: newest {name}"] = conn.execute(select(func.max(cols[name]))).scalar()
    engine.dispose()
    return out


def _table_owner(key: str) -> str:
    table, _, what = key.partition(": ")
    if table == "runs" and what.startswith("rows of kind "):
        return RUN_KIND_OWNERS.get(what.removeprefix("rows of kind "), "no task known (add it to RUN_KIND_OWNERS)")
    return TABLE_OWNERS.get(table, "no task known (add it to TABLE_OWNERS)")


@pytest.fixture(scope="module")
def runs_twice(pg_admin, tmp_path_factory):
    """The audio_retrieval DAG run twice with run id RUN: the two processes, and the files and rows before and after the second."""
    root = tmp_path_factory.mktemp("idempotence")
    home, schema = root / "home", f"ct_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = _with_search_path(PG_URL, schema)
    src = build_catalog(root / "src", tracks=8, seconds=6, seed=3, sample_rate=24000, channels=1, shared_motif_ratio=0.0)
    wav2vec2 = root / "wav2vec2-tiny"  # a tiny random model of the real architecture, so that wav2vec2_features runs
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(**TINY_WAV2VEC2)).save_pretrained(wav2vec2)
    Wav2Vec2FeatureExtractor().save_pretrained(wav2vec2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CLOUDTUNE"))}
    env.update(TINY, CLOUDTUNE_HOME=str(home), CLOUDTUNE_DB_URL=url, CLOUDTUNE__WAV2VEC2__MODEL=str(wav2vec2))
    conf = json.dumps({**CONF, "catalog_roots": [str(src)]})
    first = _cloudtune(env, "run", "--conf", conf)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    before = _files(home), _rows(url)
    second = _cloudtune(env, "run", "--conf", conf)
    for name, proc in (("first", first), ("second", second)):  # kept for reading when a check fails
        (root / f"{name}.log").write_text(proc.stdout + proc.stderr)
    yield {"home": home, "first": first, "second": second, "before": before, "after": (_files(home), _rows(url))}
    db.dispose_engines()
    with pg_admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


def test_the_second_run_succeeds(runs_twice):
    second = runs_twice["second"]
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"succeeded (pipeline run {RUN})" in second.stdout


def test_no_task_rewrites_a_finished_artifact(runs_twice):
    (files0, _), (files1, _) = runs_twice["before"], runs_twice["after"]
    changed = []
    for rel in sorted(set(files0) | set(files1)):
        if any(rel.startswith(prefix) for prefix in ALLOWED_FILES):
            continue
        old, new = files0.get(rel), files1.get(rel)
        if old != new:
            what = "added" if old is None else "removed" if new is None else "rewritten" if old[2] == new[2] else "changed"
            changed.append(f"{rel}: {what} by {_owner(rel)}")
    assert not changed, "files the second run changed:\n" + "\n".join(changed)


def test_no_task_adds_or_rewrites_a_row(runs_twice):
    (_, rows0), (_, rows1) = runs_twice["before"], runs_twice["after"]
    grew = [f"{key}: {rows0.get(key)} -> {rows1.get(key)} ({_table_owner(key)})" for key in sorted(set(rows0) | set(rows1))
            if rows0.get(key) != rows1.get(key)]
    assert not grew, "rows the second run added or rewrote:\n" + "\n".join(grew)


def test_the_second_run_says_each_task_found_its_work_done(runs_twice):
    logs = runs_twice["second"].stdout + runs_twice["second"].stderr
    run = runs_twice["home"] / "runs" / RUN
    for task, line in (("ingest", "ingest: 8 files already ingested (8 unchanged); skipped"),
                       ("train_tokenizer", "already trained for idem and current"),
                       ("tokenize", "tokenize: shard 0 of 2 already tokenized (4 tracks"),
                       ("tokenize", "tokenize: shard 1 of 2 already tokenized (4 tracks"),
                       ("splits", f"splits: {run / 'splits'} already made ("),
                       ("train_embedder", f"train: {RUN}: embedder: already trained (1 epochs"),
                       ("train_fingerprint", f"fingerprint: {RUN}: already trained (1 epochs"),
                       ("wav2vec2_features", f"embed-catalog: {run / 'embeddings' / 'wav2vec2'} is up to date"),
                       ("embed_catalog", f"embed-catalog: {run / 'embeddings' / 'contrastive'} is up to date"),
                       ("build_indexes", "index: fingerprint/ivfpq: already built ("),
                       ("evaluate", f"evaluate: run {RUN} already evaluated ("),
                       ("publish", f"publish: run {RUN}: already published "),
                       ("report", f"report: {run / 'reports' / 'metrics.csv'} already holds this table")):
        assert line in logs, f"{task}: no line {line!r} in the second run's log"
