"""Schema migrations on real SQLite and PostgreSQL: old databases upgrade in place, the result equals tables.py."""

import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import BigInteger, DateTime, Double, Integer, MetaData, event, inspect, select, text
from sqlalchemy.types import JSON
from test_store import _run_schema_sql

from pipeline.store import db, migrate, reports
from pipeline.store.tables import metadata, runs

REPO = Path(__file__).resolve().parents[1]
HEAD = migrate.head()


def _schema_diff(engine) -> list:
    """Alembic autogenerate's differences between the database and tables.py; [] when they agree."""
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"version_table": migrate.VERSION_TABLE}), metadata)


def _legacy_db(url):
    """A database as the code before migrations left it: the 0001 schema (identical DDL) and no version table."""
    engine = db.new_engine(url)
    migrate.upgrade(engine, migrate.BASELINE)
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {migrate.VERSION_TABLE}"))
    return engine


def _value(col, i, run_ids):
    """A distinct value of the column's type for row ``i``; foreign keys (all to runs.run_id) name an existing run."""
    if col.foreign_keys:
        return run_ids[i % len(run_ids)]
    if isinstance(col.type, BigInteger):
        return 2**40 + i
    if isinstance(col.type, Integer):
        return i
    if isinstance(col.type, Double):
        return i + 0.25
    if isinstance(col.type, DateTime):
        return datetime(2026, 1, 2, 3, 4, i, tzinfo=timezone.utc)
    if isinstance(col.type, JSON):
        return {"row": i, "levels": [1, 2]}
    return f"{col.table.name}.{col.name}.{i}"


def _seed_every_table(engine, n=3):
    """``n`` rows in every table, written through the database's own (reflected) schema, not tables.py's."""
    old = MetaData()
    old.reflect(engine)
    run_ids = [f"run-{i}" for i in range(n)]
    with engine.begin() as conn:
        for table in old.sorted_tables:
            rows = [{c.name: run_ids[i] if table.name == "runs" and c.name == "run_id" else _value(c, i, run_ids) for c in table.columns} for i in range(n)]
            conn.execute(table.insert(), rows)
    return old


def _dump(engine, old):
    """Every row of the tables in ``old``, by table, as sorted tuples of the old columns (read through ``old``)."""
    with engine.connect() as conn:
        return {t.name: sorted(tuple(r) for r in conn.execute(select(t))) for t in old.sorted_tables}


def test_database_from_before_migrations_upgrades_in_place(db_url):
    engine = _legacy_db(db_url)
    old = _seed_every_table(engine)
    assert len(old.tables) == 12 and "parent_run_id" not in old.tables["runs"].c
    before = _dump(engine, old)
    engine.dispose()

    upgraded = db.get_engine(db_url)  # first use upgrades it
    assert _dump(upgraded, old) == before, "rows lost or changed by the upgrade"
    with upgraded.connect() as conn:
        assert migrate.current(conn) == HEAD
        assert conn.execute(select(runs.c.run_id, runs.c.parent_run_id).order_by(runs.c.run_id)).all() == [(f"run-{i}", None) for i in range(3)]
    assert _schema_diff(upgraded) == []


def test_fresh_database_equals_tables_py(db_url):
    engine = db.get_engine(db_url)
    assert _schema_diff(engine) == [], "tables.py and the migrations disagree: write a revision (pipeline/store/migrations/env.py says how)"
    with engine.connect() as conn:
        assert migrate.current(conn) == HEAD == migrate.revisions()[-1]


def test_database_from_schema_sql_is_at_head(db_url):
    """sql/schema.sql records its revision, so a database pasted from it is not taken for a pre-migration one (and
    upgraded into a duplicate column). Its tables equal the code's: tests/test_store.py."""
    db.new_engine(db_url).dispose()  # makes the SQLite file's folder
    _run_schema_sql(db_url).dispose()
    engine = db.get_engine(db_url)
    with engine.connect() as conn:
        assert migrate.current(conn) == HEAD
    assert migrate.upgrade(engine) == (HEAD, HEAD)


def test_upgrading_again_only_reads_the_version(db_url):
    engine = db.new_engine(db_url)
    assert migrate.upgrade(engine) == (None, HEAD)
    statements = []
    event.listen(engine, "before_cursor_execute", lambda conn, cur, stmt, *a: statements.append(stmt.split(None, 1)[0].upper()))
    assert migrate.upgrade(engine) == (HEAD, HEAD)
    db.init_db(engine)
    assert statements and set(statements) <= {"SELECT", "PRAGMA"}, statements
    engine.dispose()


def test_downgrade_to_base_and_up_again(db_url):
    engine = db.new_engine(db_url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), "base")
    assert set(inspect(engine).get_table_names()) == {migrate.VERSION_TABLE}
    assert migrate.upgrade(engine) == (None, HEAD)
    assert _schema_diff(engine) == []
    engine.dispose()


def test_unknown_revision_and_foreign_tables_are_one_line_errors(db_url):
    engine = db.new_engine(db_url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '9999'"))
    with pytest.raises(migrate.MigrationError, match=r"at revision 9999, which this cloudtune does not know"):
        migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {migrate.VERSION_TABLE}"))
        conn.execute(text("DROP TABLE vae_latents"))
    with pytest.raises(migrate.MigrationError, match=r"no cloudtune_alembic_version and lacks vae_latents of revision 0001") as err:
        db.init_db(engine)
    assert "\n" not in str(err.value) and migrate.describe(engine) in str(err.value)
    engine.dispose()


def test_start_run_and_recorded_run_store_the_parent(db_url):
    with db.connect(db_url) as conn:
        pipeline_run = db.start_run(conn, "pipeline", {})
        step = db.start_run(conn, "train", {}, parent_run_id=pipeline_run)
        with db.recorded_run(conn, "evaluate", {}, parent_run_id=pipeline_run) as evaluate:
            pass
        db.start_run(conn, "train", {}, step)  # resumed without naming the parent: it stays
        parents = dict(conn.execute(select(runs.c.run_id, runs.c.parent_run_id)).all())
    assert parents == {pipeline_run: None, step: pipeline_run, evaluate.run_id: pipeline_run}
    report = reports.run_report("runs", url=db_url)
    assert list(report.columns) == ["run_id", "kind", "status", "started_at", "finished_at", "message", "parent_run_id", "host", "pid"]
    shown = report.astype(object).where(report.notna(), None)  # pandas reads NULL as NaN
    assert dict(zip(shown["run_id"], shown["parent_run_id"], strict=True)) == parents


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.faults
def test_a_running_run_whose_process_is_gone_is_marked_interrupted_and_no_other(db_url):
    with db.connect(db_url) as conn:
        dead = db.start_run(conn, "ingest", {}, pid=_dead_pid())
        alive = db.start_run(conn, "ingest", {}, pid=os.getpid())
        reused = db.start_run(conn, "ingest", {}, pid=os.getpid())  # its pid now belongs to a process started after the run: ours
        conn.execute(runs.update().where(runs.c.run_id == reused).values(started_at=datetime(2020, 1, 1, tzinfo=timezone.utc)))
        elsewhere = db.start_run(conn, "ingest", {}, pid=_dead_pid())
        conn.execute(runs.update().where(runs.c.run_id == elsewhere).values(host="another-host"))
        dag_run = db.start_run(conn, "pipeline", {})  # no process: its tasks come and go
        finished = db.start_run(conn, "ingest", {}, pid=_dead_pid())
        db.finish_run(conn, finished, "succeeded")
        conn.commit()
        with db.recorded_run(conn, "train", {}) as step:  # another kind: a step reaps only its own kind
            pass
        assert db.reap_interrupted(conn, "train") == []
        assert sorted(db.reap_interrupted(conn)) == sorted([dead, reused])
        assert db.reap_interrupted(conn) == []  # idempotent
        rows = {r.run_id: r for r in conn.execute(select(runs))}
    assert rows[step.run_id].pid == os.getpid() and rows[step.run_id].host and rows[dag_run].pid is None
    for run_id in (dead, reused):
        assert rows[run_id].status == "failed" and rows[run_id].message.startswith("interrupted: its process ") and rows[run_id].finished_at
    assert {run_id: rows[run_id].status for run_id in (alive, elsewhere, dag_run, finished)} == {
        alive: "running", elsewhere: "running", dag_run: "running", finished: "succeeded"}


@pytest.mark.faults
def test_the_runs_report_never_shows_a_dead_run_as_running(db_url):
    with db.connect(db_url) as conn:
        dead = db.start_run(conn, "tokenize", {}, pid=_dead_pid())
    report = reports.run_report("runs", url=db_url).set_index("run_id")
    assert report.loc[dead, "status"] == "failed" and report.loc[dead, "message"].startswith("interrupted")


@pytest.mark.postgres
def test_postgres_schema_gets_the_version_table_and_all_ddl(pg_admin, pg_url):
    db.get_engine(pg_url)
    schema = pg_url.rsplit("search_path%3D", 1)[1]
    names = ("cloudtune_alembic_version", "runs", "ix_runs_parent_run_id", "ix_tracks_catalog")
    with pg_admin.connect() as conn:
        where = conn.execute(text("SELECT c.relname, n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                  "WHERE c.relname = ANY(:names) AND n.nspname IN (:s, 'public') ORDER BY 1"), {"names": list(names), "s": schema}).all()
    assert where == [(name, schema) for name in sorted(names)]


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", "db", *args], capture_output=True, text=True, env=_env(), cwd=REPO, timeout=120)


def test_cli_upgrade_prints_the_revisions(db_url):
    first = _cli("upgrade", "--url", db_url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().endswith(f"revision none -> {HEAD}")
    again = _cli("upgrade")  # CLOUDTUNE_DB_URL
    assert again.returncode == 0 and again.stdout.strip().endswith(f"revision {HEAD} -> {HEAD} (already the newest)"), again.stderr


@pytest.mark.parametrize("url, code, message", [
    ("postgresql://nobody@127.0.0.1:1/nope", 1, "cloudtune db: error: postgresql+psycopg://nobody@127.0.0.1:1/nope: cannot upgrade the metrics schema to head"),
    ("nope://x", 2, "cloudtune db: error: db upgrade: not a usable database URL (Can't load plugin: sqlalchemy.dialects:nope)"),
])
def test_cli_bad_url_is_one_line_and_non_zero(url, code, message):
    p = _cli("upgrade", "--url", url)
    assert p.returncode == code and p.stdout == ""
    assert p.stderr.count("\n") == 1 and p.stderr.startswith(message), p.stderr


def test_concurrent_first_use_upgrades_once(db_url):
    """Processes that open a new database at the same moment: one creates the schema, the others wait and find it."""
    start = time.time() + 3  # after every process has imported the package
    code = f"import time; from pipeline.store import db; time.sleep(max(0, {start} - time.time())); db.get_engine({db_url!r})"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=_env(), stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [(p.communicate(timeout=120)[1].strip().splitlines() or [""])[-1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    engine = db.new_engine(db_url)
    with engine.connect() as conn:
        assert migrate.current(conn) == HEAD
    assert _schema_diff(engine) == []
    engine.dispose()


def test_revision_command_writes_the_next_revision(tmp_path):
    location = shutil.copytree(migrate.MIGRATIONS_DIR, tmp_path / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    path = migrate.new_revision("add tracks.bpm", location=location)
    assert path == location / "versions" / f"{int(HEAD) + 1:04d}_add_tracks_bpm.py"
    compile(path.read_text(), str(path), "exec")
    scripts = ScriptDirectory.from_config(migrate.alembic_config(location=location))
    assert scripts.get_current_head() == f"{int(HEAD) + 1:04d}" and scripts.get_revision(scripts.get_current_head()).down_revision == HEAD
