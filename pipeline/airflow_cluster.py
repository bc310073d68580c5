"""`cloudtune airflow cluster up|down|status`: Airflow with CeleryExecutor on this machine, without Docker, the shape of
docker-compose.yml: a PostgreSQL metadata DB (its own database, created when missing), a Redis broker, the api-server, scheduler,
dag-processor, triggerer and two Celery workers, one on queue ``default`` and one on queue ``gpu`` (the GPU-pool tasks).

Each process is started as the leader of a session of its own (:mod:`pipeline.proctree`); its pid, start time, role, queue and
log are recorded in ``$CLOUDTUNE_HOME/airflow/cluster.json``, the logs go to ``$CLOUDTUNE_HOME/airflow/logs`` (beside Airflow's
task logs). `down` stops exactly those sessions, and nothing else, then removes the state. Settings: configs/airflow.yaml
``cluster`` and ``processes``.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import time
from pathlib import Path

from pipeline import airflow_local, config, paths, proctree
from pipeline.fsutil import write_json

DEFAULT_QUEUE = "default"
# what `up` waits for on the api-server's /api/v2/monitor/health (each from its heartbeat in the metadata DB); docker-compose.yml's
# api-server health check asks the same endpoint
HEALTHY = ("metadatabase", "scheduler", "triggerer", "dag_processor")


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the workers: the machine's name with the worker's queue (``myhost-gpu``), so that
    ``task_instance.hostname`` tells which of the two workers on this machine ran a task."""
    name = socket.getfqdn()
    queue = os.environ.get("CLOUDTUNE_WORKER_QUEUE")
    return f"{name}-{queue}" if queue else name


def _settings():
    return config.load_airflow()["cluster"]


def cluster_env(secret: str) -> dict[str, str]:
    """The environment of every cluster process (and of `up` itself, which migrates the metadata DB): the project's Airflow
    environment with CeleryExecutor, the cluster's metadata DB, broker and api-server, and a real login (simple auth manager
    users, no "everyone is admin")."""
    s = _settings()
    env = {**os.environ, **airflow_local.airflow_env()}
    env.update({
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": s.metadata_db_url,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": _async_url(s.metadata_db_url),
        "AIRFLOW__CELERY__BROKER_URL": s.broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{s.metadata_db_url}",
        "AIRFLOW__CELERY__DEFAULT_QUEUE": DEFAULT_QUEUE,
        # prefork's pool processes are daemonic and a task forked from one inherits that: the steps' own worker processes (ingest's
        # decoders, DataLoader workers) then fail with "daemonic processes are not allowed to have children". solo runs each
        # task from the worker's main process, one at a time: one worker per queue is one task slot per queue
        "AIRFLOW__CELERY__POOL": "solo",
        # each worker would fork a "stale bundle cleanup" process that sleeps between checks and outlives a worker killed with -9;
        # the only bundle here is the local, unversioned dags folder, so it has nothing to clean
        "AIRFLOW__DAG_PROCESSOR__STALE_BUNDLE_CLEANUP_INTERVAL": "0",
        "AIRFLOW__API__HOST": s.host,
        "AIRFLOW__API__PORT": str(s.port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{s.host}:{s.port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": s.users,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__PARALLELISM": str(airflow_local.parallelism()),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(config.PROJECT_ROOT), os.environ.get("PYTHONPATH")])),  # the tasks import this pipeline
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    env.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", secret)  # one secret for the api-server and the workers' task tokens
    env.setdefault("AIRFLOW__API__SECRET_KEY", secret)
    return env


def _async_url(url: str) -> str:
    """The metadata DB's URL for Airflow's async engine: psycopg 3 is async itself (Airflow would otherwise derive
    ``postgresql+asyncpg``, a driver this project does not install)."""
    for sync in ("postgresql+psycopg2://", "postgresql://"):
        if url.startswith(sync):
            return "postgresql+psycopg://" + url[len(sync):]
    return url


def processes() -> list[dict]:
    """What `up` starts: role, queue (workers) and the `airflow` arguments, in start order."""
    s = _settings()
    gpu_queue = config.load_airflow()["pools"].gpu
    out = [{"role": role, "queue": None, "args": args} for role, args in (
        ("api-server", ["api-server", "--host", s.host, "--port", str(s.port)]), ("scheduler", ["scheduler"]),
        ("dag-processor", ["dag-processor"]), ("triggerer", ["triggerer", "--skip-serve-logs"]))]
    for queue in (DEFAULT_QUEUE, gpu_queue):
        # logs are files on this machine: no log server (two workers would want the same port)
        out.append({"role": "worker", "queue": queue, "args": ["celery", "worker", "--queues", queue, "--celery-hostname", f"{queue}@%h",
                                                               "--skip-serve-logs"]})
    return out


def ensure_database(url: str) -> bool:
    """Create the PostgreSQL database of ``url`` when it is missing (connecting to the server's ``postgres`` database).
    Returns True when it was created."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    target = make_url(url)
    if not target.drivername.startswith("postgresql"):
        return False
    engine = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": target.database}).first():
                return False
            conn.execute(text(f'CREATE DATABASE "{target.database}"'))
            return True
    finally:
        engine.dispose()


def _check_broker(url: str) -> None:
    if url.startswith(("redis://", "rediss://")):
        import redis

        try:
            redis.Redis.from_url(url, socket_connect_timeout=5).ping()
        except redis.RedisError as exc:
            raise RuntimeError(f"cluster: the Celery broker {url} does not answer ({exc}); configs/airflow.yaml cluster.broker_url") from None


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) != 0


# --- state --------------------------------------------------------------------------------------------------------------


def read_state() -> dict | None:
    path = paths.airflow_cluster_state()
    return json.loads(path.read_text()) if path.exists() else None


def status() -> list[dict]:
    """Each recorded process: role, queue, pid, alive, log. Empty when the cluster is not up. A record without ``started_boot_s``
    (written before it was, with a wall-clock ``started`` that moves with the clock) is known by its pid alone."""
    state = read_state() or {"processes": []}
    return [{**p, "alive": proctree.is_alive(p["pid"], p.get("started_boot_s"))} for p in state["processes"]]


def _leaders(state: dict) -> list[int]:
    """The recorded session leaders that are still ours: alive with the recorded start time, or gone (their session id stays
    reserved while any process of the session lives). A pid reused by another process is left alone."""
    out = []
    for p in state["processes"]:
        try:
            reused = p.get("started_boot_s") not in (None, proctree.create_time(p["pid"]))
        except Exception:  # noqa: BLE001 - psutil.NoSuchProcess: the leader is gone, its session may not be
            reused = False
        if not reused:
            out.append(p["pid"])
    return out


def down() -> list[dict]:
    """Stop every process `up` started (SIGTERM to each session, SIGKILL after ``processes.stop_grace_s``), remove the state.
    Returns what was stopped (empty when the cluster was not up)."""
    state = read_state()
    if state is None:
        return []
    left = proctree.stop(_leaders(state), config.load_airflow()["processes"].stop_grace_s)
    if left:
        raise RuntimeError(f"cluster: processes {left} did not exit after SIGKILL; {paths.airflow_cluster_state()} kept")
    paths.airflow_cluster_state().unlink()
    return state["processes"]


def up() -> tuple[str, list[dict]]:
    """Start the cluster, or what of it has died. Returns (what happened, status()): ``"up"`` after a fresh start, ``"already up"``,
    or ``"restarted <role> [<queue>], ..."`` when some recorded processes were dead (a killed worker, a crashed scheduler): those
    are started again with the same settings and secret, the living ones are left alone. A fresh start waits up to
    ``cluster.start_timeout_s`` for the api-server's health endpoint; a process that exits meanwhile stops all of them."""
    state = read_state()
    if state is not None:
        current = status()
        dead = [p for p in current if not p["alive"]]
        if not dead:
            return "already up", current
        if len(dead) < len(current):
            _restart(state, dead)
            return "restarted " + ", ".join(_name(p) for p in dead), status()
        down()  # a stale state: whatever is left of it goes, then a fresh start
    s = _settings()
    if not _port_free(s.host, s.port):
        raise RuntimeError(f"cluster: {s.host}:{s.port} is in use; configs/airflow.yaml cluster.port (CLOUDTUNE__CLUSTER__PORT)")
    _check_broker(s.broker_url)
    if ensure_database(s.metadata_db_url):
        print(f"cluster: created the metadata database {s.metadata_db_url.rsplit('/', 1)[-1]}", file=sys.stderr)
    env = cluster_env(_secret())
    os.environ.update({k: v for k, v in env.items() if k.startswith("AIRFLOW")})  # the migration below, in this process
    airflow_local.ensure_pools()
    started = []
    try:
        for p in processes():
            started.append(_start(p, env))
            write_json(paths.airflow_cluster_state(), {"url": f"http://{s.host}:{s.port}", "processes": started})
        _wait_healthy(f"http://{s.host}:{s.port}/api/v2/monitor/health", s.start_timeout_s)
    except BaseException:
        down()
        raise
    return "up", status()


def _name(p: dict) -> str:
    return p["role"] if p["queue"] is None else f"worker-{p['queue']}"


def _start(p: dict, env: dict[str, str]) -> dict:
    """Start one process of :func:`processes` (``p``: role, queue, args) as a session leader; its state record."""
    log = paths.airflow_cluster_logs() / f"{_name(p)}.log"
    if p["queue"]:
        env = {**env, "CLOUDTUNE_WORKER_QUEUE": p["queue"], "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname"}
    proc = proctree.start([sys.executable, "-m", "airflow", *p["args"]], env, log)
    return {"role": p["role"], "queue": p["queue"], "pid": proc.pid, "started_boot_s": proctree.create_time(proc.pid),
            "log": str(log)}


def _restart(state: dict, dead: list[dict]) -> None:
    """Start ``dead`` processes again in place of their records. What is left of a dead leader's session (a task process that
    outlived its worker) is stopped first, so a retried task never runs beside its orphan."""
    grace = config.load_airflow()["processes"].stop_grace_s
    specs = {(p["role"], p["queue"]): p for p in processes()}
    env = cluster_env(_secret())
    records = state["processes"]
    for p in dead:
        proctree.stop(_leaders({"processes": [p]}), grace)
        i = next(i for i, r in enumerate(records) if r["pid"] == p["pid"])
        records[i] = _start(specs[(p["role"], p["queue"])], env)
        print(f"cluster: restarted {_name(p)} (pid {records[i]['pid']}; it was pid {p['pid']})", file=sys.stderr)
        write_json(paths.airflow_cluster_state(), state)


def _secret() -> str:
    """The cluster's signing secret (:func:`pipeline.paths.airflow_cluster_secret`), made once: a process restarted by `up` must
    accept the task tokens the api-server issued before (``[api_auth] jwt_secret``) and the UI's sessions."""
    path = paths.airflow_cluster_secret()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
        os.replace(path.with_suffix(".tmp"), path)
    return path.read_text().strip()


def _wait_healthy(url: str, timeout_s: float) -> None:
    """Until the api-server answers and reports every part of :data:`HEALTHY` healthy."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dead = [p for p in status() if not p["alive"]]
        if dead:
            p = dead[0]
            raise RuntimeError(f"cluster: {p['role']} {p['queue'] or ''} exited while starting; its log: {p['log']}: "
                               + " | ".join(Path(p["log"]).read_text(errors="replace").strip().splitlines()[-3:]))
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                health = json.loads(resp.read())
            if all((health.get(part) or {}).get("status") == "healthy" for part in HEALTHY):
                return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(2)
    raise RuntimeError(f"cluster: no healthy api-server at {url} after {timeout_s:.0f} s (configs/airflow.yaml cluster.start_timeout_s); "
                       f"logs in {paths.airflow_cluster_logs()}")
