"""Airflow on this machine: `cloudtune run` (a DAG run in-process with ``dag.test()``), `cloudtune airflow setup|standalone`.

Airflow reads its configuration when it is first imported, so :func:`airflow_env` is applied to ``os.environ``
before any ``import airflow``. Its metadata DB defaults to SQLite under ``$CLOUDTUNE_HOME/airflow``, created
when missing; an ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` already in the environment (PostgreSQL in
docker-compose) is kept. The pipeline's own metrics DB stays ``CLOUDTUNE_DB_URL``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipeline import config, paths

DAGS_DIR = config.PROJECT_ROOT / "dags"
PLUGINS_DIR = config.PROJECT_ROOT / "plugins"


def airflow_home() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME") or paths.airflow_home())


def airflow_env(home: Path | None = None) -> dict[str, str]:
    """The environment Airflow needs to run this project's DAGs and plugins (defaults only: set variables win)."""
    home = Path(home or airflow_home())
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS_DIR),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "CLOUDTUNE_HOME": str(paths.home()),
        "CLOUDTUNE_DB_URL": config.db_url(),
    }
    return {k: os.environ.get(k) or v for k, v in env.items()}


def _configure() -> None:
    """Point this process's Airflow at ``airflow_env()``; refuses when airflow was imported with another AIRFLOW_HOME."""
    env = airflow_env()
    if "airflow" in sys.modules and sys.modules["airflow"].__dict__.get("_cloudtune_home") not in (None, env["AIRFLOW_HOME"]):
        raise RuntimeError(f"airflow is already configured for {sys.modules['airflow']._cloudtune_home}; start a new process")
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.update({k: v for k, v in env.items() if k.startswith("AIRFLOW")})
    import airflow

    airflow._cloudtune_home = env["AIRFLOW_HOME"]


def ensure_db() -> None:
    """Create (or migrate) the Airflow metadata DB when it is missing or old: `airflow db migrate`, in-process."""
    _configure()
    from airflow import settings
    from airflow.utils.db import check_migrations, initdb

    if settings.Session is None:
        settings.configure_orm()
    try:
        check_migrations(timeout=0)
    except TimeoutError:
        print(f"airflow: creating the metadata DB ({os.environ['AIRFLOW__DATABASE__SQL_ALCHEMY_CONN']})", file=sys.stderr)
        initdb()


def gpu_slots() -> int:
    """Slots of the `gpu` pool: the visible GPUs, at least 1."""
    import torch

    return max(1, torch.cuda.device_count())


def ensure_pools(slots: int | None = None) -> dict[str, int]:
    """Create or resize the `gpu` pool (configs/airflow.yaml pools.gpu). Returns {pool: slots}."""
    ensure_db()
    from airflow.models.pool import Pool

    name = config.load_airflow()["pools"].gpu
    slots = gpu_slots() if slots is None else slots
    if slots < 1:
        raise ValueError(f"--gpu-slots {slots}: must be >= 1")
    Pool.create_or_update_pool(name, slots, "GPU-bound CloudTune tasks (tokenize, train, embed, evaluate)", include_deferred=False)
    return {name: slots}


def dag_bag():
    """The project's dags/ folder parsed by Airflow (``.dags``, ``.import_errors``)."""
    _configure()
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def load_dag(dag_id: str):
    """The DAG ``dag_id`` from the project's dags/ folder; an import error is raised with its file and message."""
    bag = dag_bag()
    if bag.import_errors:
        path, message = next(iter(bag.import_errors.items()))
        raise RuntimeError(f"{path}: DAG import error: {' '.join(message.split())[-400:]}")
    dag = bag.dags.get(dag_id)
    if dag is None:
        raise ValueError(f"--dag {dag_id}: no such DAG in {DAGS_DIR} (known: {', '.join(sorted(bag.dags))})")
    return dag


def run_dag(dag_id: str, conf: dict | None = None) -> dict:
    """One DAG run in this process (``dag.test()``) against the current CLOUDTUNE_HOME and CLOUDTUNE_DB_URL.

    Returns {"dag_id", "dag_run_id", "state", "failed_tasks"}."""
    ensure_pools()
    dag = load_dag(dag_id)
    dr = dag.test(run_conf=conf or {})
    failed = sorted({ti.task_id for ti in dr.get_task_instances() if ti.state == "failed"})
    return {"dag_id": dag_id, "dag_run_id": dr.run_id, "state": str(dr.state), "failed_tasks": failed}


def parallelism() -> int:
    """Task slots of the executor: configs/airflow.yaml ``processes.parallelism``, null meaning the CPU count."""
    return config.load_airflow()["processes"].parallelism or os.cpu_count() or 1


def standalone(port: int = 8080) -> int:
    """`airflow standalone` (api-server with the UI, scheduler, dag-processor, triggerer) on 127.0.0.1:<port> with this project's
    dags/ and plugins/, LocalExecutor with :func:`parallelism` slots. Every local user is admin (simple auth manager, ALL_ADMINS)
    unless the environment says otherwise. It runs in a session of its own: on Ctrl-C, SIGTERM, SIGHUP or its end, every process
    it started (the components, the executor's workers, the tasks) is stopped, SIGKILL after ``processes.stop_grace_s``."""
    from pipeline import proctree

    ensure_pools()
    env = {**os.environ, **airflow_env(), "AIRFLOW__API__PORT": str(port)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # standalone starts `airflow ...` by name
    env.setdefault("AIRFLOW__API__HOST", "127.0.0.1")
    env.setdefault("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    env.setdefault("AIRFLOW__CORE__PARALLELISM", str(parallelism()))  # Airflow's default (32) forks 32 LocalExecutor workers
    env["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
    print(f"airflow: UI on http://127.0.0.1:{port} (dags {DAGS_DIR}, plugins {PLUGINS_DIR}; parallelism {env['AIRFLOW__CORE__PARALLELISM']}); "
          "Ctrl-C stops it", file=sys.stderr)
    proc = proctree.start([sys.executable, "-m", "airflow", "standalone"], env)
    code = proctree.supervise([proc], config.load_airflow()["processes"].stop_grace_s)
    print(f"airflow: standalone stopped (exit {code})", file=sys.stderr)
    return code
