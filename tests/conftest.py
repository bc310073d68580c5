"""Shared fixtures: an isolated CLOUDTUNE_HOME per test, and metrics DBs on real SQLite and real PostgreSQL.

PostgreSQL tests run whenever CLOUDTUNE_TEST_PG_URL is set; each test gets its own schema, dropped
afterwards. In CI (CI=true) the URL must be set and reachable: the tests fail rather than skip.
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text

from pipeline.store import db

PG_URL = os.environ.get("CLOUDTUNE_TEST_PG_URL")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_configure(config):
    if IN_CI and not PG_URL:
        raise pytest.UsageError("CI=true but CLOUDTUNE_TEST_PG_URL is not set: the PostgreSQL tests must run in CI (see .ci/run)")


# Marked `slow` here, in one place, so that `make test-fast` (pytest -m "not slow") stays under a minute; `make test` (CI)
# runs them all. Node-id prefixes relative to tests/; seconds measured with `pytest --durations=40` and PostgreSQL on.
SLOW = (
    "test_airflow_standalone.py",  # `cloudtune airflow standalone` started, then stopped with SIGTERM (~70 s)
    "test_airflow_cluster.py",  # `cloudtune airflow cluster up`, an audio_retrieval run on Celery workers, `down` (PostgreSQL, Redis)
    "test_cluster_faults.py",  # two audio_retrieval runs on the cluster, the second with a killed worker, scheduler and metrics DB
    "test_airflow_server.py",  # a real api-server, scheduler and dag-processor, a DAG run through the REST API (~110 s)
    "test_airflow_dags.py::test_demo_",  # the `chain` fixture: `cloudtune demo` + two nightly_reindex DAG runs (~80 s, PostgreSQL)
    "test_airflow_dags.py::test_nightly_",  # the same chain
    "test_airflow_dags.py::test_dream_generator_dag_",  # two dream_generator DAG runs through dag.test() (~8 s)
    "test_airflow_dags.py::test_asr_evaluation_dag_",  # two asr_evaluation DAG runs through dag.test() with pocketsphinx
    "test_faults_artifacts.py",  # a tiny published fingerprint run broken file by file: search, serve, hot swap, nightly (~35 s)
    "test_faults_ingest.py",  # `cloudtune ingest` killed with -9 mid-run, then run again (~10 s)
    "test_idempotence.py",  # audio_retrieval run twice with one run id through dag.test(): nothing redone, no row added (~40 s, PostgreSQL)
    "test_train.py::test_training_learns_and_a_killed_run_resumes_",  # 4 training runs with a kill and a resume (8 s; 30 s with PostgreSQL)
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.removeprefix("tests/").startswith(SLOW):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """Every test gets its own CLOUDTUNE_HOME and default SQLite DB; no env override leaks in."""
    path = tmp_path / "home"
    monkeypatch.setenv("CLOUDTUNE_HOME", str(path))
    monkeypatch.delenv("CLOUDTUNE_DB_URL", raising=False)
    for var in list(os.environ):
        if var.startswith("CLOUDTUNE__"):
            monkeypatch.delenv(var)
    yield path
    db.dispose_engines()


@pytest.fixture(scope="session")
def pg_admin():
    if not PG_URL:
        if IN_CI:
            pytest.fail("CLOUDTUNE_TEST_PG_URL is not set in CI")
        pytest.skip("CLOUDTUNE_TEST_PG_URL not set")
    engine = create_engine(db.normalize_url(PG_URL), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to reach the server
        if IN_CI:
            pytest.fail(f"PostgreSQL at CLOUDTUNE_TEST_PG_URL is not reachable in CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    yield engine
    engine.dispose()


def _with_search_path(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{db.normalize_url(url)}{sep}options={quote(f'-csearch_path={schema}')}"


@pytest.fixture
def pg_url(pg_admin):
    """A PostgreSQL URL whose search_path is a fresh schema of this test."""
    schema = f"ct_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = _with_search_path(PG_URL, schema)
    yield url
    db.dispose_engines()
    with pg_admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture
def sqlite_url(home):
    return f"sqlite:///{home / 'test.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, monkeypatch):
    """Run the test once on SQLite and once on PostgreSQL; CLOUDTUNE_DB_URL points at it."""
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    monkeypatch.setenv("CLOUDTUNE_DB_URL", url)
    yield url
    db.dispose_engines()
