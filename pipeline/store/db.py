"""Engine creation, schema upgrade on first use, portable upsert and run bookkeeping."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.schema import CreateIndex, CreateTable

from pipeline import config, lifeline
from pipeline.store import migrate
from pipeline.store.tables import metadata, runs


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def normalize_url(url: str) -> str:
    """Accept the URLs people paste (postgres://, postgresql://) and use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")  # first: what follows waits for other connections too
    cur.execute("PRAGMA foreign_keys=ON")
    _wal(cur)
    cur.close()


def _wal(cur, tries: int = 200) -> None:
    """Put the file in WAL mode (readers, such as reports and the UI, never block the writer; the mode stays with the file).

    The switch needs every other connection out of the file, and SQLite does not wait for that (no busy handler): processes
    that open a new file at once (Airflow tasks, test workers) got "database is locked". So: only when not WAL yet, and retried.
    """
    for attempt in range(tries):
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == tries - 1:
                raise
            time.sleep(0.025)


_ENGINES: dict[str, Engine] = {}


def get_engine(url: str | None = None) -> Engine:
    """The engine for ``url`` (default: CLOUDTUNE_DB_URL), one per URL, with the schema upgraded to the newest revision on first use."""
    url = normalize_url(url or config.db_url())
    if url not in _ENGINES:
        _ENGINES[url] = _create(url)
    return _ENGINES[url]


def dispose_engines() -> None:
    """Close every pooled connection (tests, forked workers)."""
    while _ENGINES:
        _ENGINES.popitem()[1].dispose()


def _create(url: str) -> Engine:
    engine = new_engine(url)
    try:
        init_db(engine)
    except BaseException:
        engine.dispose()  # not cached: the next get_engine tries again
        raise
    return engine


def new_engine(url: str) -> Engine:
    """A new engine for ``url`` with our SQLite settings, the schema left as it is (`cloudtune db upgrade` reads it first)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def connect(url: str | None = None) -> Connection:
    return get_engine(url).connect()


def init_db(engine: Engine) -> None:
    """Upgrade the schema to the newest revision: create it on an empty DB, migrate an older one in place (rows kept).

    Cheap when already there (one version read). Raises migrate.MigrationError naming the DB and the reason.
    """
    migrate.upgrade(engine)


def schema_sql() -> str:
    """The schema as plain SQL that runs unchanged on SQLite and PostgreSQL (sql/schema.sql).

    It ends with the migrations' version table at the newest revision: a database created from this file is at that
    revision, and the code's first use leaves it as it is (without it, it would be taken for a pre-migration database).
    """
    out = [
        "-- CloudTune metrics schema. Generated from pipeline/store/tables.py by `cloudtune db schema`;",
        "-- tests/test_store.py keeps this file identical to the code. Runs unchanged on SQLite and PostgreSQL 15+.",
        "",
    ]
    dialect = postgresql.dialect()
    version = migrate.version_table()
    for table in [*metadata.sorted_tables, version]:
        if table.comment:
            out.append(f"-- {table.name}: {table.comment}")
        ddl = str(CreateTable(table).compile(dialect=dialect)).strip().replace("\t", "    ")
        out.append("\n".join(line.rstrip() for line in ddl.splitlines()) + ";")
        for index in sorted(table.indexes, key=lambda i: i.name):
            out.append(str(CreateIndex(index).compile(dialect=dialect)).strip() + ";")
        if table is version:
            out.append(f"INSERT INTO {version.name} (version_num) VALUES ('{migrate.head()}');")
        out.append("")
    return "\n".join(out)


def upsert(conn: Connection, table, rows: Iterable[Mapping[str, Any]], key: Iterable[str] | None = None) -> int:
    """Insert rows, replacing those whose primary key (or ``key`` columns) already exists.

    Idempotent re-runs rely on this: writing the same metric twice leaves one row.
    """
    rows = [dict(r) for r in rows]
    if not rows:
        return 0
    key = list(key or [c.name for c in table.primary_key.columns])
    dialect = {"postgresql": postgresql, "sqlite": sqlite}.get(conn.dialect.name)
    if dialect is None:
        raise NotImplementedError(f"upsert: unsupported database dialect {conn.dialect.name!r}")
    stmt = dialect.insert(table)
    updates = {c: stmt.excluded[c] for c in rows[0] if c not in key}
    stmt = stmt.on_conflict_do_update(index_elements=key, set_=updates) if updates else stmt.on_conflict_do_nothing(index_elements=key)
    conn.execute(stmt, rows)
    return len(rows)


def new_run_id(kind: str) -> str:
    return f"{kind}-{utcnow():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def start_run(conn: Connection, kind: str, run_config: Mapping[str, Any], run_id: str | None = None, *, parent_run_id: str | None = None,
              pid: int | None = None) -> str:
    """Record a run as running (or mark an existing run_id as running again, for resumed runs); return its run_id.

    ``parent_run_id``: the pipeline run this step runs for. None leaves it as it is: NULL for a new run, kept for a resumed one.
    ``pid``: the process that runs it to the end (recorded with this host, see :func:`reap_interrupted`); None for a row that
    outlives the process writing it (a DAG run's own row).
    """
    run_id = run_id or new_run_id(kind)
    cfg = json.loads(json.dumps(run_config, default=str))  # JSON-safe copy (paths, tuples)
    row = {"run_id": run_id, "kind": kind, "status": "running", "config": cfg, "started_at": utcnow(), "finished_at": None, "message": None,
           "host": lifeline.host() if pid is not None else None, "pid": pid}
    if parent_run_id is not None:
        row["parent_run_id"] = parent_run_id
    upsert(conn, runs, [row])
    conn.commit()
    return run_id


def ensure_run(conn: Connection, run_id: str, kind: str = "pipeline") -> None:
    """Make sure ``run_id`` has a `runs` row (metric rows reference it); an existing row is left as it is."""
    if conn.execute(select(runs.c.run_id).where(runs.c.run_id == run_id)).first() is None:
        conn.execute(runs.insert().values(run_id=run_id, kind=kind, status="running", config={}, started_at=utcnow()))
        conn.commit()


def finish_run(conn: Connection, run_id: str, status: str = "succeeded", message: str | None = None) -> None:
    conn.execute(update(runs).where(runs.c.run_id == run_id).values(status=status, finished_at=utcnow(), message=message))
    conn.commit()


INTERRUPTED = "interrupted"  # the message of a run whose process died: it starts with this word


def reap_interrupted(conn: Connection, kind: str | None = None) -> list[str]:
    """Mark failed, with the message "interrupted: ...", every `running` run (of ``kind``, or any) whose process on this host is
    gone (killed with -9, crashed, its machine restarted): it can never finish its row itself. Rows of other hosts, and rows with
    no process (DAG runs), are left alone. Returns the run ids marked. Idempotent; safe beside other reapers (each update names
    the pid it found)."""
    host = lifeline.host()
    query = select(runs.c.run_id, runs.c.pid, runs.c.started_at).where(runs.c.status == "running", runs.c.host == host, runs.c.pid.is_not(None))
    if kind is not None:
        query = query.where(runs.c.kind == kind)
    dead = [r for r in conn.execute(query).all() if not lifeline.process_alive(r.pid, r.started_at)]
    for r in dead:
        message = f"{INTERRUPTED}: its process {r.pid} on {host} ended without finishing the run (killed, or the machine restarted)"
        conn.execute(update(runs).where(runs.c.run_id == r.run_id, runs.c.status == "running", runs.c.pid == r.pid)
                     .values(status="failed", finished_at=utcnow(), message=message))
    conn.commit()
    return [r.run_id for r in dead]


@dataclass
class Run:
    """What a step sets on its run before it ends: the final status and a one-line message."""

    run_id: str
    status: str = "succeeded"
    message: str | None = None


@contextmanager
def recorded_run(conn: Connection, kind: str, run_config: Mapping[str, Any], run_id: str | None = None, *,
                 parent_run_id: str | None = None) -> Iterator[Run]:
    """A `runs` row around a step: running, then the step's status, or `failed` with the exception.

    ``parent_run_id``: the pipeline run this step runs for (see start_run).

    On an exception (Ctrl-C included) the uncommitted work is rolled back, the run is marked failed
    with the reason, and the exception propagates. A process killed outright (SIGKILL) runs no handler: its row records this
    process (host, pid), and the next run of the same kind marks it failed, "interrupted" (:func:`reap_interrupted`), first.
    """
    reap_interrupted(conn, kind)
    run = Run(start_run(conn, kind, run_config, run_id, parent_run_id=parent_run_id, pid=os.getpid()))
    try:
        yield run
    except BaseException as exc:
        conn.rollback()
        finish_run(conn, run.run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    finish_run(conn, run.run_id, run.status, run.message)


__all__ = ["INTERRUPTED", "Run", "connect", "dispose_engines", "ensure_run", "finish_run", "get_engine", "init_db", "new_engine", "new_run_id",
           "reap_interrupted", "recorded_run", "schema_sql", "start_run", "upsert", "utcnow"]
