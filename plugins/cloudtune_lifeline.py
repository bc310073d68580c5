"""Airflow plugin: a task process dies with the worker that supervises it.

Airflow runs each task in a process forked by a supervisor (the Celery worker itself in the cluster's solo pool, a LocalExecutor
worker in standalone). When that supervisor is killed with -9 (the OOM killer, a crashed machine's watchdog, `kill -9`), the task
process lives on as an orphan: it keeps training and writing the run's checkpoints while the scheduler, seeing no heartbeat, has
the task retried elsewhere. This listener asks the kernel to SIGKILL the task process when its supervisor dies
(:func:`pipeline.lifeline.die_with_parent`), so the retry never runs beside its orphan; the steps' own worker processes die with
the task in turn. ``dag.test()`` runs tasks in the caller's own process, which is left alone."""

from __future__ import annotations

import os

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin


class TaskLifeline:
    @hookimpl
    def on_task_instance_running(self, previous_state, task_instance) -> None:
        from airflow.sdk.execution_time import supervisor, task_runner

        if isinstance(getattr(task_runner, "SUPERVISOR_COMMS", None), supervisor.InProcessSupervisorComms):
            return  # dag.test(): no supervisor process; the caller must not die with its shell
        import sys

        from pipeline.lifeline import die_with_parent

        parent = os.getppid()
        die_with_parent(parent)
        print(f"lifeline: task process {os.getpid()} dies with its supervisor {parent}", file=sys.stderr)


class CloudTuneLifelinePlugin(AirflowPlugin):
    name = "cloudtune_lifeline"
    listeners = [TaskLifeline()]
