"""Faults on the real cluster (`cloudtune airflow cluster up`: CeleryExecutor, Redis, a PostgreSQL metadata DB, workers on queues
`default` and `gpu`), with the metrics in a PostgreSQL server of the test's own (tests/throwaway_pg.py) so that it can be stopped.

`audio_retrieval` runs on a tiny catalog twice through the REST API: once undisturbed (the reference), once with three faults:

1. the `gpu` Celery worker is killed with -9 while `train_embedder` is in its second epoch: the task process dies with it (no
   orphan trains on), the scheduler sees the missing heartbeat and fails the try, `cluster up` restarts the worker, and the retry
   resumes from the last checkpoint ("resuming after epoch 1" in its log);
2. the scheduler is killed with -9 while that retry runs and restarted by `cluster up`: the run goes on;
3. the metrics DB is stopped while `evaluate` works (its `runs` row is open) and started again once the try has failed: the retry
   succeeds.

Pass: the run succeeds; its `training_epochs` and Recall@K / MRR rows equal the reference's (same seed, CPU: bit for bit); no
metric row is duplicated or missing; no `runs` row is left running. Slow (a few minutes): markers `cluster` and `faults`."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from conftest import IN_CI
from sqlalchemy import create_engine, text
from test_airflow_cluster import CLOUDTUNE, metadata_db, redis_db  # noqa: F401 - fixtures
from test_airflow_dags import TINY
from test_airflow_server import _free_port, run_audio_retrieval
from test_airflow_standalone import _alive, _session_members
from throwaway_pg import ThrowawayPostgres, server_bin

psutil = pytest.importorskip("psutil")
pytestmark = [pytest.mark.cluster, pytest.mark.faults]
EPOCHS = 3
FAULTS = {  # what the faults need: quick detection of a dead task and of a dead scheduler, retries that wait for nothing
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20", "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "10", "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "5",
    "CLOUDTUNE__DAG__RETRY_DELAY_S": "3",
    "CLOUDTUNE__TRAINING__CLIPS_PER_TRACK": "96",  # epochs of a few seconds: long enough to be killed in
}


@pytest.fixture
def metrics_pg():
    if server_bin() is None:
        if IN_CI:
            pytest.fail("the cluster fault test needs PostgreSQL's server programs (initdb) in CI")
        pytest.skip("no PostgreSQL server programs (initdb)")
    pg = ThrowawayPostgres()
    pg.start()
    yield pg
    pg.remove()


def _cluster(env, *args, timeout=180):
    return subprocess.run([CLOUDTUNE, "airflow", "cluster", *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_cluster_survives_a_killed_worker_a_restarted_scheduler_and_metrics_db(tmp_path, metadata_db, redis_db, metrics_pg):  # noqa: F811
    url, _ = metadata_db
    port = _free_port()
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CLOUDTUNE"))}
    env.update(TINY, **FAULTS, CLOUDTUNE_HOME=str(home), CLOUDTUNE_DB_URL=metrics_pg.url, CLOUDTUNE__CLUSTER__METADATA_DB_URL=url,
               CLOUDTUNE__CLUSTER__BROKER_URL=redis_db, CLOUDTUNE__CLUSTER__PORT=str(port), CLOUDTUNE__PROCESSES__STOP_GRACE_S="20",
               AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5", AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME="0.5")
    state_file = home / "airflow" / "cluster.json"
    seen: dict[int, float] = {}
    try:
        up = _cluster(env, "up", timeout=600)
        assert up.returncode == 0, up.stdout + up.stderr[-4000:]
        cluster = _Cluster(env, home, port, state_file, seen)
        ref_id, ref_state = cluster.run(tmp_path / "ref", "faults-ref")
        assert ref_state == "success", cluster.task_states(ref_id)

        hit_id = cluster.trigger(tmp_path / "hit", "faults-hit")
        _kill_gpu_worker_mid_epoch(cluster, hit_id)
        _restart_scheduler(cluster, hit_id)
        _restart_metrics_db_during_evaluate(cluster, hit_id, metrics_pg)
        assert cluster.wait_finished(hit_id) == "success", cluster.task_states(hit_id)
        _check_nothing_lost(cluster, hit_id, metrics_pg.url)

        seen.update(cluster.members())
        down = _cluster(env, "down")
        assert down.returncode == 0, down.stdout + down.stderr[-2000:]
        assert _alive(seen) == [], "processes left after `cloudtune airflow cluster down`"
    finally:
        if state_file.exists():
            _cluster(env, "down")
        for pid in _alive(seen):
            try:
                os.kill(int(pid.split()[0]), signal.SIGKILL)
            except OSError:
                pass


class _Cluster:
    """The running cluster seen from the test: its processes (cluster.json), the REST API with a real login, waits that fail with
    every process's log tail."""

    def __init__(self, env, home: Path, port: int, state_file: Path, seen: dict):
        self.env, self.home, self.state_file, self.seen = env, home, state_file, seen
        password = json.loads((home / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        base = f"http://127.0.0.1:{port}"
        token = httpx.post(f"{base}/auth/token", json={"username": "admin", "password": password}, timeout=30).json()["access_token"]
        self.client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        self.seen.update(self.members())

    def processes(self) -> list[dict]:
        return json.loads(self.state_file.read_text())["processes"]

    def process(self, role: str, queue: str | None = None) -> dict:
        return next(p for p in self.processes() if p["role"] == role and p["queue"] == queue)

    def members(self) -> dict[int, float]:
        return _session_members({p["pid"] for p in self.processes()})

    def wait(self, what: str, check, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                result = check()
            except httpx.HTTPError:
                result = None
            if result:
                return result
            time.sleep(0.5)
        logs = "\n".join(f"--- {p['role']} {p['queue']}: {Path(p['log']).read_text()[-1500:]}" for p in self.processes())
        pytest.fail(f"timed out after {timeout} s waiting for {what}\n{logs}")

    def run(self, folder: Path, run_id: str) -> tuple[str, str]:
        folder.mkdir()
        return run_audio_retrieval(self.client, self.env, folder, "faults", run_id, self.wait, parse_s=240, run_s=900, epochs=EPOCHS)

    def trigger(self, folder: Path, run_id: str) -> str:
        folder.mkdir()
        return run_audio_retrieval(self.client, self.env, folder, "faults", run_id, self.wait, parse_s=240, run_s=None, epochs=EPOCHS)[0]

    def wait_finished(self, dag_run_id: str, timeout: float = 900) -> str:
        def finished():
            state = self.client.get(f"/api/v2/dags/audio_retrieval/dagRuns/{dag_run_id}").json()["state"]
            return state if state in ("success", "failed") else None

        return self.wait("the DAG run to finish", finished, timeout)

    def task(self, dag_run_id: str, task_id: str) -> dict:
        got = self.client.get(f"/api/v2/dags/audio_retrieval/dagRuns/{dag_run_id}/taskInstances/{task_id}")
        return got.json() if got.status_code == 200 else {}

    def task_states(self, dag_run_id: str) -> dict:
        tis = self.client.get(f"/api/v2/dags/audio_retrieval/dagRuns/{dag_run_id}/taskInstances").json()["task_instances"]
        return {t["task_id"]: (t["state"], t["try_number"]) for t in tis}

    def restart(self, name: str) -> None:
        up = _cluster(self.env, "up")
        assert up.returncode == 0 and f"cluster: restarted {name}" in up.stdout, up.stdout + up.stderr[-2000:]
        self.seen.update(self.members())

    def task_log(self, dag_run_id: str, task_id: str, attempt: int) -> str:
        found = list((self.home / "airflow" / "logs").glob(f"dag_id=audio_retrieval/run_id={dag_run_id}/task_id={task_id}/attempt={attempt}.log"))
        assert found, f"no log of {task_id} attempt {attempt}"
        return found[0].read_text()


def _metrics(url: str, sql: str, **params) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).all()
    finally:
        engine.dispose()


def _kill_gpu_worker_mid_epoch(cluster: _Cluster, dag_run_id: str) -> None:
    url = cluster.env["CLOUDTUNE_DB_URL"]
    cluster.wait("train_embedder's first epoch", lambda: _metrics(
        url, "SELECT epoch FROM training_epochs WHERE run_id = 'faults-hit' AND model = 'embedder'"), 600)
    worker = cluster.process("worker", "gpu")
    doomed = _session_members({worker["pid"]})
    assert any("airflow worker --" in " ".join(psutil.Process(pid).cmdline()) for pid in doomed if psutil.pid_exists(pid)), \
        "no task process under the gpu worker while train_embedder runs"
    epochs_done = len(_metrics(url, "SELECT epoch FROM training_epochs WHERE run_id = 'faults-hit' AND model = 'embedder'"))
    assert epochs_done < EPOCHS, "train_embedder finished before it could be killed: make its epochs longer"
    os.kill(worker["pid"], signal.SIGKILL)
    # the task process dies with its worker (plugins/cloudtune_lifeline.py): nothing trains on beside the retry
    try:
        cluster.wait("the killed worker's task process to die with it", lambda: _alive(doomed) == [], 30)
    except pytest.fail.Exception as exc:
        raise AssertionError(f"left after the worker was killed: {_alive(doomed)}") from exc
    cluster.restart("worker-gpu")
    cluster.wait("train_embedder's retry", lambda: cluster.task(dag_run_id, "train_embedder").get("try_number", 0) >= 2
                 and cluster.task(dag_run_id, "train_embedder")["state"] == "running", 240)


def _restart_scheduler(cluster: _Cluster, dag_run_id: str) -> None:
    os.kill(cluster.process("scheduler")["pid"], signal.SIGKILL)
    cluster.restart("scheduler")
    cluster.wait("train_embedder's retry to succeed", lambda: cluster.task(dag_run_id, "train_embedder").get("state") == "success", 600)


def _restart_metrics_db_during_evaluate(cluster: _Cluster, dag_run_id: str, pg: ThrowawayPostgres) -> None:
    cluster.wait("evaluate to open its runs row", lambda: _metrics(
        pg.url, "SELECT 1 FROM runs WHERE kind = 'evaluate' AND parent_run_id = 'faults-hit' AND status = 'running'"), 600)
    pg.stop()
    try:
        cluster.wait("evaluate's try to fail", lambda: cluster.task(dag_run_id, "evaluate").get("state") in ("up_for_retry", "failed"), 300)
    finally:
        pg.start()


def _check_nothing_lost(cluster: _Cluster, dag_run_id: str, url: str) -> None:
    states = cluster.task_states(dag_run_id)
    assert states["train_embedder"] == ("success", 2) and states["evaluate"][0] == "success" and states["evaluate"][1] >= 2, states
    assert "train: faults-hit: resuming after epoch 1" in cluster.task_log(dag_run_id, "train_embedder", 2)

    epochs = {run: _metrics(url, "SELECT epoch, train_loss, val_recall_at_1 FROM training_epochs WHERE run_id = :r AND model = 'embedder' "
                                 "ORDER BY epoch", r=run) for run in ("faults-ref", "faults-hit")}
    assert [e.epoch for e in epochs["faults-hit"]] == list(range(1, EPOCHS + 1))  # one row per epoch: none repeated by the retry
    assert [v for e in epochs["faults-hit"] for v in e] == pytest.approx([v for e in epochs["faults-ref"] for v in e], abs=1e-6)

    key = "embedder, index_kind, query_set, metric, k"
    dupes = _metrics(url, f"SELECT run_id, {key}, count(*) FROM retrieval_metrics GROUP BY run_id, {key} HAVING count(*) > 1")
    assert dupes == []
    quality = {run: dict(((r[:-1]), r[-1]) for r in _metrics(url, f"SELECT {key}, value FROM retrieval_metrics WHERE run_id = :r "
                                                                   "AND query_set NOT LIKE 'latency%'", r=run))
               for run in ("faults-ref", "faults-hit")}
    assert quality["faults-hit"].keys() == quality["faults-ref"].keys() and quality["faults-hit"]
    assert quality["faults-hit"] == pytest.approx(quality["faults-ref"], abs=1e-9)
    left = _metrics(url, "SELECT run_id, kind FROM runs WHERE status = 'running'")
    assert left == [], f"runs left running after the run succeeded: {left}"
