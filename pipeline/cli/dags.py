"""`cloudtune` commands of the DAGs: demo, run, airflow."""

from __future__ import annotations

import argparse
import json
import os

from pipeline import config, paths
from pipeline.cli.common import EXIT_FAILED, EXIT_USAGE, CommandError


def _dag_conf(raw: str | None) -> dict:
    if not raw:
        return {}
    try:
        conf = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CommandError(f"--conf: not valid JSON: {exc}", EXIT_USAGE) from None
    if not isinstance(conf, dict):
        raise CommandError("--conf: expected a JSON object of DAG params, e.g. '{\"epochs\": 2}'", EXIT_USAGE)
    return conf


def run_pipeline_dag(dag_id: str, conf: dict) -> str:
    """One DAG run in-process (dag.test()); returns the pipeline run id, or raises CommandError naming the failed tasks."""
    from pipeline.airflow_local import run_dag
    from pipeline.steps.bookkeeping import pipeline_run_id

    result = run_dag(dag_id, conf)
    run_id = pipeline_run_id(result["dag_run_id"], conf.get("run_id"))
    if result["state"] != "success":
        raise CommandError(f"DAG {dag_id} run {result['dag_run_id']} ended {result['state']}; failed tasks: {', '.join(result['failed_tasks']) or '-'} "
                           f"(pipeline run {run_id}; the task logs above say why)")
    print(f"run: DAG {dag_id} run {result['dag_run_id']} succeeded (pipeline run {run_id})")
    return run_id


def print_metric_table(run_id: str) -> None:
    from pipeline.steps.retrieval import metric_summary
    from pipeline.store import reports

    print(f"\nRetrieval metrics of run {run_id}, read back from {db_name()} (cloudtune report retrieval_run --param run_id={run_id}):")
    print(reports.format_frame(metric_summary(run_id).drop(columns=["run_id"]).round(4)))


def db_name() -> str:
    url = config.db_url()
    return url.split("@")[-1] if "@" in url else url


def cmd_run(args: argparse.Namespace) -> int:
    conf = _dag_conf(args.conf)
    if args.catalog:
        conf["catalog"] = args.catalog
    dag_id = args.dag or config.load_airflow()["run"].dag_id
    print_metric_table(run_pipeline_dag(dag_id, conf))
    return 0


def cmd_airflow(args: argparse.Namespace) -> int:
    from pipeline import airflow_local

    if args.action == "setup":
        pools = airflow_local.ensure_pools(args.gpu_slots)
        env = airflow_local.airflow_env()
        print(f"airflow: metadata DB ready ({env['AIRFLOW__DATABASE__SQL_ALCHEMY_CONN']}); pools: "
              + ", ".join(f"{name} ({slots} slots)" for name, slots in pools.items()))
        return 0
    if args.action == "cluster":
        return _cluster(args.cluster_action)
    if args.action == "env":
        for key, value in airflow_local.airflow_env().items():
            print(f"export {key}={value}")
        return 0
    return airflow_local.standalone(args.port)


def _cluster(action: str | None) -> int:
    from pipeline import airflow_cluster

    if action is None:
        raise CommandError("airflow cluster: say up, down or status", EXIT_USAGE)
    try:
        if action == "up":
            outcome, procs = airflow_cluster.up()
            print(f"cluster: {outcome}; UI and REST API on {airflow_cluster.read_state()['url']}")
        elif action == "down":
            procs = airflow_cluster.down()
            print(f"cluster: stopped {len(procs)} processes" if procs else "cluster: not up")
            return 0
        else:
            procs = airflow_cluster.status()
            if not procs:
                print("cluster: not up")
                return EXIT_FAILED
    except RuntimeError as exc:
        raise CommandError(str(exc)) from None
    print(f"{'role':<14} {'queue':<8} {'pid':>8}  {'alive':<5}  log")
    for p in procs:
        print(f"{p['role']:<14} {p['queue'] or '-':<8} {p['pid']:>8}  {'yes' if p['alive'] else 'NO':<5}  {p['log']}")
    return 0 if all(p["alive"] for p in procs) else EXIT_FAILED


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.audio.synth import build_catalog
    from pipeline.config import DemoCatalogSettings
    from pipeline.steps.ingest import ingest

    s = config.section(DemoCatalogSettings, config.load(), "demo_catalog", tracks=args.tracks, seconds=args.seconds, seed=args.seed)
    out = paths.demo_catalog_dir(s.seed, s.tracks, s.seconds)
    if not (out / "catalog.json").exists():
        build_catalog(out, s.tracks, s.seconds, s.seed, s.sample_rate, s.channels, s.shared_motif_ratio, workers=os.cpu_count() or 1)
    summary = ingest([out], catalog="demo")
    print(summary.line())
    if not summary.ingested:
        return EXIT_FAILED
    demo = config.load_airflow()["demo"]
    conf = {"catalog": "demo", "catalog_roots": [], "epochs": args.epochs or demo.epochs, "embedding_dim": demo.embedding_dim,
            "fingerprint_epochs": demo.fingerprint_epochs,
            "index_kinds": list(demo.index_kinds), "query_plan": demo.query_plan, **_dag_conf(args.conf)}
    run_id = run_pipeline_dag("audio_retrieval", conf)
    print_metric_table(run_id)
    return 0


def add_commands(sub) -> None:
    """Add this module's subcommands to the ``cloudtune`` parser's subparsers ``sub``."""
    s = sub.add_parser("demo", help="demo catalog + ingest + `cloudtune run` of audio_retrieval + its metric table (what `make demo` runs)")
    s.add_argument("--tracks", type=int)
    s.add_argument("--seconds", type=float)
    s.add_argument("--seed", type=int)
    s.add_argument("--epochs", type=int, help="embedder epochs (config airflow.yaml demo.epochs)")
    s.add_argument("--conf", help="more DAG params as a JSON object (they win over the demo's)")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("run", help="run a DAG (default audio_retrieval) in-process with Airflow's dag.test(), then print its metric table")
    s.add_argument("--catalog", help="the catalog param (default: configs/airflow.yaml dag.catalog)")
    s.add_argument("--conf", help='DAG params as a JSON object, e.g. \'{"epochs": 2, "catalog_roots": ["/music"]}\'')
    s.add_argument("--dag", choices=("audio_retrieval", "nightly_reindex"), help="default: configs/airflow.yaml run.dag_id")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("airflow", help="setup: metadata DB + `gpu` pool | env: the Airflow environment | standalone: the Airflow UI on this machine"
                       " | cluster up|down|status: CeleryExecutor, PostgreSQL, Redis and two workers on this machine")
    s.add_argument("action", choices=("setup", "env", "standalone", "cluster"))
    s.add_argument("cluster_action", nargs="?", choices=("up", "down", "status"), help="cluster: start, stop or list its processes")
    s.add_argument("--gpu-slots", type=int, help="setup: slots of the gpu pool (default: visible GPUs, at least 1)")
    s.add_argument("--port", type=int, default=8080, help="standalone: api-server port")
    s.set_defaults(func=cmd_airflow)
