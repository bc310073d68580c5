"""`cloudtune airflow standalone` stops every process it started on SIGTERM: the api-server, scheduler, dag-processor, triggerer and
the LocalExecutor's workers, which it sizes to the machine (parallelism = CPU count). Slow (Airflow's start, a minute or more on a
busy machine): marked `airflow_server`."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from test_airflow_server import _free_port

psutil = pytest.importorskip("psutil")
from pipeline import proctree  # noqa: E402 - needs psutil

CLOUDTUNE = str(Path(sys.executable).parent / "cloudtune")
pytestmark = pytest.mark.airflow_server
ROLES = ("scheduler", "api_server", "dag-processor", "triggerer", "LocalExecutor")  # as `ps` shows them (setproctitle)


def _tree(root: int) -> dict[int, float]:
    """pid -> start time (:func:`pipeline.proctree.create_time`, which never moves) of ``root``'s descendants and of every
    process in their sessions (orphans keep their session)."""
    try:
        found = {p.pid: proctree.create_time(p.pid) for p in psutil.Process(root).children(recursive=True)}
    except psutil.Error:
        return {}
    sessions = {os.getsid(pid) for pid in list(found) if psutil.pid_exists(pid)} - {os.getsid(0)}
    return _session_members(sessions) | found


def _session_members(leaders: set[int]) -> dict[int, float]:
    """pid -> create time of every process in the sessions ``leaders`` lead."""
    found = {}
    for pid in psutil.pids():
        try:
            if os.getsid(pid) in leaders:
                found[pid] = proctree.create_time(pid)
        except (OSError, psutil.Error):
            pass
    return found


def _alive(seen: dict[int, float]) -> list[str]:
    left = []
    for pid, created in seen.items():
        try:
            p = psutil.Process(pid)
            if proctree.create_time(pid) == created and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{pid} {' '.join(p.cmdline())[:120]}")
        except psutil.Error:
            pass
    return left


def test_standalone_stops_every_process_it_started_on_sigterm(tmp_path):
    port = _free_port()
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CLOUDTUNE"))}
    env.update(CLOUDTUNE_HOME=str(home), AIRFLOW__API_AUTH__JWT_SECRET="cloudtune-test-secret", AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
               CLOUDTUNE__PROCESSES__STOP_GRACE_S="20")
    log = tmp_path / "standalone.log"
    with open(log, "wb") as out:  # a session of its own: whatever this test leaves behind, the cleanup below can find
        proc = subprocess.Popen([CLOUDTUNE, "airflow", "standalone", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    seen: dict[int, float] = {}
    try:
        deadline, healthy = time.monotonic() + 420, False
        while time.monotonic() < deadline and not healthy:
            assert proc.poll() is None, f"standalone exited with {proc.returncode}: {log.read_text()[-3000:]}"
            seen.update(_tree(proc.pid))
            try:
                healthy = httpx.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                time.sleep(2)
        assert healthy, f"no healthy api-server after 420 s: {log.read_text()[-3000:]}"
        deadline, commands = time.monotonic() + 120, ""  # all four components, the scheduler with its LocalExecutor workers
        while time.monotonic() < deadline and not all(role in commands for role in ROLES):
            time.sleep(2)
            seen.update(_tree(proc.pid))
            commands = " ".join(_alive(seen))
        assert all(role in commands for role in ROLES), commands
        time.sleep(5)
        seen.update(_tree(proc.pid))
        standalone = psutil.Process(proc.pid).children()[0]  # `airflow standalone`: its components inherit its environment
        assert standalone.environ()["AIRFLOW__CORE__PARALLELISM"] == str(os.cpu_count())
        assert standalone.environ()["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 128 + signal.SIGTERM
        assert time.monotonic() - started < 60
        assert _alive(seen) == [], "processes left after SIGTERM to `cloudtune airflow standalone`"
        assert b"airflow: standalone stopped" in log.read_bytes()
    finally:
        for pid in _alive_pids({**seen, **_tree(proc.pid)}) + ([proc.pid] if proc.poll() is None else []):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        proc.wait(timeout=30)


def _alive_pids(seen: dict[int, float]) -> list[int]:
    return [int(line.split()[0]) for line in _alive(seen)]
