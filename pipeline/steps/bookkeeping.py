"""Pipeline-run bookkeeping for the DAGs: run ids, the `runs` row of a DAG run, and the failure callback.

One DAG run is one pipeline run: every artifact goes to ``$CLOUDTUNE_HOME/runs/<run_id>/`` and every metric
row names ``run_id`` (see :func:`pipeline_run_id`).
"""

from __future__ import annotations

import re
from typing import Any

from pipeline import paths
from pipeline.fsutil import write_json_if_changed
from pipeline.store import db

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def pipeline_run_id(dag_run_id: str, given: str | None = None) -> str:
    """The pipeline run id of a DAG run: ``given`` (a param) or Airflow's run id made safe for paths and SQL
    (``manual__2026-01-02T03:04:05.678+00:00`` -> ``manual__2026-01-02T03-04-05.678-00-00``)."""
    run_id = _UNSAFE.sub("-", (given or dag_run_id).strip()).strip("-.")
    if not run_id:
        raise ValueError(f"run id {given or dag_run_id!r}: nothing left after removing characters outside [A-Za-z0-9._-]")
    return run_id


def context_run_id(context) -> str:
    """The pipeline run id of the DAG run a task (or a callback) runs in."""
    return pipeline_run_id(context["run_id"], context["params"].get("run_id"))


def mark_failed(context) -> None:
    """on_failure_callback of the pipeline DAGs: a task failed for good (retries spent), so the pipeline run is failed too."""
    finish(context_run_id(context), "failed", f"task {context['ti'].task_id} failed: {context.get('exception')}")


def reap_interrupted() -> list[str]:
    """Mark failed ("interrupted") every `running` run of a step whose process on this host is gone (a kill -9, a crash):
    the cleanup a DAG runs first (:func:`start`), beside the one each step runs before it starts. Returns the run ids marked."""
    with db.connect() as conn:
        return db.reap_interrupted(conn)


def start(run_id: str, kind: str, params: dict[str, Any]) -> str:
    """The DAG run's `runs` row (status running, the params as its config), after :func:`reap_interrupted`; returns the run id.
    The row records no process: the DAG run outlives this task. A re-run of the same run id marks the row running again and
    leaves params.json alone when the params are the same."""
    reap_interrupted()
    with db.connect() as conn:
        db.start_run(conn, kind, params, run_id)
    write_json_if_changed(paths.run_params(run_id), params)
    return run_id


def finish(run_id: str, status: str = "succeeded", message: str | None = None) -> None:
    with db.connect() as conn:
        db.finish_run(conn, run_id, status, message)
