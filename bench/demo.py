"""`make demo` end to end: demo catalog + ingest + the audio_retrieval DAG via dag.test() + the metric table; prints the wall
time and each task's seconds (from the Airflow metadata DB).

    .venv/bin/python bench/demo.py [--home var/bench/demo-home] [--keep]

Runs `cloudtune demo` (defaults: configs/pipeline.yaml demo_catalog, configs/airflow.yaml demo) in a fresh CLOUDTUNE_HOME
with the default SQLite metrics DB, the way `make demo` does after `make install`.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=ROOT / "var" / "bench" / "demo-home")
    ap.add_argument("--keep", action="store_true", help="keep the home of an earlier run (measures a re-run)")
    args = ap.parse_args()
    if args.home.exists() and not args.keep:
        shutil.rmtree(args.home)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CLOUDTUNE"))}
    env["CLOUDTUNE_HOME"] = str(args.home)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    p = subprocess.run([str(Path(sys.executable).parent / "cloudtune"), "demo"], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    table = p.stdout.split("Retrieval metrics of run")[-1]
    print("Retrieval metrics of run" + table if p.returncode == 0 else p.stderr[-4000:])
    with sqlite3.connect(args.home / "airflow" / "airflow.db") as conn:
        rows = conn.execute("SELECT task_id, map_index, start_date, end_date FROM task_instance WHERE dag_id = 'audio_retrieval' "
                            "AND end_date IS NOT NULL ORDER BY start_date").fetchall()
    print("\ntask seconds:")
    for task, index, a, b in rows:
        seconds = (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()
        print(f"  {task}{f'[{index}]' if index >= 0 else ''}: {seconds:.1f}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"\ncloudtune demo: exit {p.returncode}, {wall:.1f} s wall ({wall / 60:.2f} min), {usage.ru_utime + usage.ru_stime:.0f} s CPU "
          f"on {os.cpu_count()} cores; load average before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f} (other work slows the wall time)")
    return p.returncode


if __name__ == "__main__":
    sys.exit(main())
