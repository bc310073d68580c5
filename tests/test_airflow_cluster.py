"""`cloudtune airflow cluster up|status|down`: CeleryExecutor on this machine with a throwaway PostgreSQL metadata database
(created by `up`), a Redis DB number of the test's own, the api-server, scheduler, dag-processor, triggerer and two Celery workers
(queues `default` and `gpu`). The test triggers `audio_retrieval` on a tiny catalog through REST API v2 with a real login, waits
for success, checks by SQL on Airflow's metadata DB that the GPU-pool tasks ran on the gpu worker and the others on the default
worker, and the run's metric rows in the metrics DB (PostgreSQL); then `down` must leave no process of the cluster.
Needs PostgreSQL (CLOUDTUNE_TEST_PG_URL) and Redis (CLOUDTUNE_TEST_REDIS_URL, default DB 13 on 127.0.0.1:6379). Slow: marked
`cluster` (and `slow`)."""

import importlib.metadata
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import IN_CI, PG_URL
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from test_airflow_dags import TINY
from test_airflow_server import _free_port, run_audio_retrieval
from test_airflow_standalone import _alive, _session_members

psutil = pytest.importorskip("psutil")
CLOUDTUNE = str(Path(sys.executable).parent / "cloudtune")
REDIS_URL = os.environ.get("CLOUDTUNE_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")  # a DB number of its own: flushed afterwards
GPU_TASKS = {"tokenize", "train_embedder", "train_fingerprint", "wav2vec2_features", "embed_catalog", "evaluate"}
pytestmark = pytest.mark.cluster


def _cloudtune(env, *args, timeout=120):
    return subprocess.run([CLOUDTUNE, "airflow", "cluster", *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def redis_db():
    try:
        # installed? Asked of the package metadata, never by importing it: importing airflow in this process would fix its
        # configuration (AIRFLOW_HOME, the DAGs folder) before the in-process DAG runs of other test files set it
        importlib.metadata.version("apache-airflow-providers-celery")
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - no provider, no server: skip here, fail in CI
        if IN_CI:
            pytest.fail(f"the cluster test needs Redis at {REDIS_URL} and the celery provider in CI: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} or the celery provider missing: {exc}")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()


@pytest.fixture
def metadata_db(pg_admin):
    """A PostgreSQL database name that does not exist yet (`up` creates it); dropped afterwards."""
    name = f"ct_cluster_{uuid.uuid4().hex[:10]}"
    yield str(make_url(PG_URL).set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)), name
    with pg_admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_cluster_runs_audio_retrieval_on_two_queues_and_stops_everything(tmp_path, metadata_db, redis_db, pg_url):
    url, db_name = metadata_db
    port = _free_port()
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CLOUDTUNE"))}
    env.update(TINY, CLOUDTUNE_HOME=str(home), CLOUDTUNE_DB_URL=pg_url, CLOUDTUNE__CLUSTER__METADATA_DB_URL=url,
               CLOUDTUNE__CLUSTER__BROKER_URL=redis_db, CLOUDTUNE__CLUSTER__PORT=str(port), CLOUDTUNE__PROCESSES__STOP_GRACE_S="20",
               AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5", AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME="0.5")
    state_file = home / "airflow" / "cluster.json"
    seen: dict[int, float] = {}
    leaders: set[int] = set()
    try:
        up = _cloudtune(env, "up", timeout=600)
        assert up.returncode == 0, up.stdout + up.stderr[-4000:]
        assert f"cluster: created the metadata database {db_name}" in up.stderr and "cluster: up;" in up.stdout
        state = json.loads(state_file.read_text())
        leaders.update(p["pid"] for p in state["processes"])
        seen.update(_session_members(leaders))
        assert sorted((p["role"], p["queue"]) for p in state["processes"]) == sorted(
            [("api-server", None), ("scheduler", None), ("dag-processor", None), ("triggerer", None), ("worker", "default"), ("worker", "gpu")])
        assert all(Path(p["log"]).parent == home / "airflow" / "logs" for p in state["processes"])

        again = _cloudtune(env, "up")
        assert again.returncode == 0 and "cluster: already up" in again.stdout, again.stdout + again.stderr[-2000:]
        status = _cloudtune(env, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        rows = [line.split() for line in status.stdout.splitlines()[1:]]
        assert sorted((r[0], r[1], r[3]) for r in rows) == sorted(
            [("api-server", "-", "yes"), ("scheduler", "-", "yes"), ("dag-processor", "-", "yes"), ("triggerer", "-", "yes"),
             ("worker", "default", "yes"), ("worker", "gpu", "yes")])

        _run_audio_retrieval(tmp_path, env, port, home, url, pg_url, state)
        seen.update(_session_members(leaders))

        down = _cloudtune(env, "down", timeout=180)
        assert down.returncode == 0 and "cluster: stopped 6 processes" in down.stdout, down.stdout + down.stderr[-2000:]
        assert not state_file.exists()
        assert _alive(seen) == [], "processes left after `cloudtune airflow cluster down`"
        assert _cloudtune(env, "status").stdout.strip() == "cluster: not up"
        assert _cloudtune(env, "down").stdout.strip() == "cluster: not up"
    finally:
        if state_file.exists():
            _cloudtune(env, "down", timeout=180)
        for pid in _alive({**seen, **_session_members(leaders)}):
            try:
                os.kill(int(pid.split()[0]), 9)
            except OSError:
                pass


def _run_audio_retrieval(tmp_path, env, port, home, url, pg_url, state):
    base = f"http://127.0.0.1:{port}"
    password = json.loads((home / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
    assert httpx.get(f"{base}/api/v2/dags", timeout=30).status_code in (401, 403)  # a real login: nobody is admin by default
    token = httpx.post(f"{base}/auth/token", json={"username": "admin", "password": password}, timeout=30).json()["access_token"]
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def wait(what, check, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [p for p in state["processes"] if not psutil.pid_exists(p["pid"]) or psutil.Process(p["pid"]).status() == psutil.STATUS_ZOMBIE]
            assert not dead, f"{dead[0]['role']} {dead[0]['queue']} died: {Path(dead[0]['log']).read_text()[-3000:]}"
            result = check()
            if result:
                return result
            time.sleep(3)
        logs = "\n".join(f"--- {p['role']} {p['queue']}: {Path(p['log']).read_text()[-1500:]}" for p in state["processes"])
        pytest.fail(f"timed out after {timeout} s waiting for {what}\n{logs}")

    dag_run_id, run_state = run_audio_retrieval(client, env, tmp_path, "cluster", "cluster-run", wait, parse_s=240, run_s=900)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tis = conn.execute(text("SELECT task_id, state, pool, queue, hostname FROM task_instance WHERE run_id = :r"), {"r": dag_run_id}).all()
            xcoms = conn.execute(text("SELECT task_id, value FROM xcom WHERE run_id = :r"), {"r": dag_run_id}).all()
    finally:
        engine.dispose()
    assert run_state == "success", [tuple(t) for t in tis]
    ran = [t for t in tis if t.state == "success"]
    assert {t.task_id for t in ran} >= {"ingest", "tokenize", "train_embedder", "evaluate", "publish", "report"}
    for t in ran:  # worker_hostname(): the machine's name with the worker's queue
        queue = "gpu" if t.task_id in GPU_TASKS else "default"
        assert (t.pool == "gpu") == (queue == "gpu") and t.queue == queue and t.hostname.endswith(f"-{queue}"), tuple(t)
    # what one task hands the next (XComs) is a path under CLOUDTUNE_HOME or a plain value, never /tmp nor data: a worker on another
    # machine with the same shared home can pick it up
    assert {t.task_id for t in xcoms} >= {"ingest", "splits", "train_embedder", "build_indexes", "evaluate"}
    for t in xcoms:
        for found in _strings(t.value):  # the column is JSON: psycopg gives it decoded
            assert not found.startswith("/") or found.startswith(f"{home}/"), (t.task_id, found)
        assert len(json.dumps(t.value)) < 4096, (t.task_id, "an XCom this large carries data, not a path")
    metrics = create_engine(pg_url)
    try:
        with metrics.connect() as conn:
            rows = conn.execute(text("SELECT count(*) FROM retrieval_metrics WHERE run_id = 'cluster-run'")).scalar()
    finally:
        metrics.dispose()
    assert rows > 0


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)
