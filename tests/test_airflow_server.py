"""A real Airflow 3.3 (api-server + scheduler + dag-processor, LocalExecutor, SQLite metadata DB) on a free port with the project's
dags/ and plugins/: the test triggers `audio_retrieval` with params through REST API v2 on a tiny catalog, waits for success, then
reads the run's table on the plugin's "Retrieval metrics" page. Slow (a minute or two): marked `airflow_server`."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from test_airflow_dags import TINY

from pipeline import config

CLOUDTUNE = str(Path(sys.executable).parent / "cloudtune")
AIRFLOW = [sys.executable, "-m", "airflow"]
pytestmark = pytest.mark.airflow_server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check, timeout: float, procs: dict, logs: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                pytest.fail(f"airflow {name} exited with {proc.returncode} while waiting for {what}: {(logs / f'{name}.log').read_text()[-3000:]}")
        try:
            result = check()
            if result:
                return result
        except httpx.HTTPError:
            pass
        time.sleep(2)
    tails = "\n".join(f"--- {n}: {(logs / f'{n}.log').read_text()[-1500:]}" for n in procs)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


@pytest.fixture
def airflow_server(tmp_path):
    port = _free_port()
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CLOUDTUNE"))}
    env.update(TINY, CLOUDTUNE_HOME=str(home), AIRFLOW_HOME=str(home / "airflow"))
    env.update({
        "AIRFLOW__CORE__DAGS_FOLDER": str(config.PROJECT_ROOT / "dags"), "AIRFLOW__CORE__PLUGINS_FOLDER": str(config.PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow' / 'airflow.db'}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True", "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": "cloudtune-test-secret", "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
    })
    setup = subprocess.run([CLOUDTUNE, "airflow", "setup"], env=env, capture_output=True, text=True, timeout=300)
    assert setup.returncode == 0, setup.stderr[-3000:]
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = {}
    try:
        for name, cmd in (("api-server", ["api-server", "--port", str(port)]), ("scheduler", ["scheduler"]), ("dag-processor", ["dag-processor"])):
            with open(logs / f"{name}.log", "w") as log:
                procs[name] = subprocess.Popen([*AIRFLOW, *cmd], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        _wait("the api-server", lambda: httpx.get(f"{base}/api/v2/monitor/health", timeout=5).status_code == 200, 180, procs, logs)
        token = httpx.get(f"{base}/auth/token", timeout=10).json()["access_token"]
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        yield {"client": client, "procs": procs, "logs": logs, "home": home, "env": env}
        client.close()
    finally:
        for proc in procs.values():  # the process groups we started, and nothing else
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def run_audio_retrieval(client: httpx.Client, env: dict, folder: Path, catalog: str, run_id: str, wait, parse_s: float, run_s: float | None,
                        epochs: int = 1):
    """A tiny demo catalog made in ``folder``, then the ``audio_retrieval`` DAG, once parsed (``parse_s``), unpaused and triggered
    through the REST API with the UI form's params on it, waited for (``run_s``; None: not waited for). ``wait(what, check,
    timeout_s)`` polls ``check`` until it returns something true. Returns (dag_run_id, final state or None)."""
    src = folder / "catalog"
    made = subprocess.run([CLOUDTUNE, "demo-catalog", "--out", str(src), "--tracks", "8", "--seconds", "6", "--seed", "3"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    wait("the DAG to be parsed", lambda: client.get("/api/v2/dags/audio_retrieval").status_code == 200, parse_s)
    assert client.patch("/api/v2/dags/audio_retrieval", json={"is_paused": False}).status_code == 200
    conf = {"catalog": catalog, "catalog_roots": [str(src)], "epochs": epochs, "embedding_dim": 32, "embedders": ["mel-stats", "contrastive", "wav2vec2"],
            "index_kinds": ["flat", "hnsw"], "device": "cpu", "run_id": run_id}
    created = client.post("/api/v2/dags/audio_retrieval/dagRuns", json={"logical_date": None, "conf": conf})
    assert created.status_code == 200, created.text
    dag_run_id = created.json()["dag_run_id"]
    if run_s is None:
        return dag_run_id, None

    def finished():
        state = client.get(f"/api/v2/dags/audio_retrieval/dagRuns/{dag_run_id}").json()["state"]
        return state if state in ("success", "failed") else None

    return dag_run_id, wait("the DAG run to finish", finished, run_s)


def test_trigger_audio_retrieval_through_the_rest_api(airflow_server, tmp_path):
    client, procs, logs = airflow_server["client"], airflow_server["procs"], airflow_server["logs"]
    dag_run_id, state = run_audio_retrieval(client, airflow_server["env"], tmp_path, "rest", "rest-api-run",
                                            lambda what, check, timeout: _wait(what, check, timeout, procs, logs), parse_s=180, run_s=480)
    tis = client.get(f"/api/v2/dags/audio_retrieval/dagRuns/{dag_run_id}/taskInstances").json()["task_instances"]
    assert state == "success", {t["task_id"]: t["state"] for t in tis}
    assert {t["task_id"] for t in tis} >= {"tokenize", "train_embedder", "evaluate", "publish", "report"}
    states = {t["task_id"]: t["state"] for t in tis}  # no wav2vec2 model is configured: its task is skipped and the run goes on
    assert states["wav2vec2_features"] == "skipped" and states["build_indexes"] == states["report"] == "success"
    assert {t["pool"] for t in tis if t["task_id"] in ("tokenize", "train_embedder", "evaluate")} == {"gpu"}

    page = client.get("/cloudtune/metrics")  # the plugin's page on the same api-server
    assert page.status_code == 200 and "<h2>Run rest-api-run</h2>" in page.text and "<td>mel-stats</td><td>hnsw</td>" in page.text
