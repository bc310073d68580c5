"""Schema migrations: bring a metrics database to the newest revision in place (Alembic, configured in code).

In: an Engine (SQLite or PostgreSQL). Out: the revision before and after. `db.init_db` calls `upgrade` on the first
use of each engine, `cloudtune db upgrade` on demand. The revisions are in `migrations/versions/`; how to add one:
the docstring of `migrations/env.py`.
"""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Column, Connection, Engine, MetaData, PrimaryKeyConstraint, String, Table, inspect, text
from sqlalchemy.exc import SQLAlchemyError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
BASELINE = "0001"  # the schema of the code before migrations
# Not Alembic's default `alembic_version`: Airflow keeps its own revision there and may share the database.
VERSION_TABLE = "cloudtune_alembic_version"
# First key of pg_advisory_xact_lock(LOCK_CLASS, hash of the schema): one migrator per schema at a time, other schemas
# (per-test schemas, other deployments in the same database) do not wait. Any int4 no other code of ours uses.
LOCK_CLASS = 0x43540001


class MigrationError(RuntimeError):
    """A database could not be brought to a revision; the message is one line naming the database and the reason."""


def alembic_config(connection: Connection | None = None, location: Path = MIGRATIONS_DIR) -> Config:
    """An Alembic Config without alembic.ini; env.py runs the revisions on ``connection`` (in its transaction)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(location).replace("%", "%%"))  # ConfigParser interpolates %
    cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The newest revision id of this code (e.g. "0002")."""
    return _scripts().get_current_head()


def revisions() -> list[str]:
    """Every revision id of this code, oldest first."""
    return [s.revision for s in reversed(list(_scripts().walk_revisions()))]


def current(conn: Connection) -> str | None:
    """The revision the database is at; None when it has no version table (empty, or created before migrations)."""
    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def version_table() -> Table:
    """The version table as Alembic creates it (one row: the revision the database is at), for sql/schema.sql."""
    return Table(VERSION_TABLE, MetaData(), Column("version_num", String(32), nullable=False), PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
                 comment="The schema revision (pipeline/store/migrations) this database is at; Alembic keeps it.")


def describe(engine: Engine) -> str:
    """The database as an error message names it (password hidden)."""
    return engine.url.render_as_string(hide_password=True)


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Bring the database to ``revision`` (default: the newest) in place; return (revision before, revision after).

    - empty database: every revision from 0001;
    - created by the code before migrations (our tables, no version table): stamped 0001, which is its schema, then
      upgraded, so its rows stay and new columns are added;
    - already there: only the version is read (this runs at every process start).
    Concurrent callers (Airflow tasks, test workers) take a lock held until the upgrade commits and re-read the version
    under it, so one of them upgrades and the others find the result. Raises MigrationError (one line) on failure.
    """
    name = describe(engine)
    target = head() if revision == "head" else revision
    try:
        with engine.connect() as conn:
            before = current(conn)
        if before == target:
            return before, before
        with engine.connect() as conn:
            _lock(conn)
            before = current(conn)  # another process may have upgraded while we waited
            if before != target:
                if before is not None and before not in revisions():
                    raise MigrationError(f"{name}: the metrics schema is at revision {before}, which this cloudtune does not know "
                                         f"(a newer release upgraded it; its newest here is {head()}): install that release")
                if before is None and _created_before_migrations(conn, name):
                    command.stamp(alembic_config(conn), BASELINE)
                command.upgrade(alembic_config(conn), revision)
            after = current(conn)
            conn.commit()
        return before, after
    except MigrationError:
        raise
    except (SQLAlchemyError, CommandError, OSError) as exc:
        raise MigrationError(f"{name}: cannot upgrade the metrics schema to {revision}: {_reason(exc)}") from exc


def new_revision(message: str, location: Path = MIGRATIONS_DIR) -> Path:
    """Write ``versions/<next number>_<message slug>.py`` from script.py.mako (down_revision: the current head); return its path."""
    scripts = ScriptDirectory.from_config(alembic_config(location=location))
    number = max((int(s.revision) for s in scripts.walk_revisions()), default=0) + 1
    script = command.revision(alembic_config(location=location), message=message, rev_id=f"{number:04d}")
    return Path(script.path)


def _reason(exc: BaseException) -> str:
    """The driver's own message on one line (without SQLAlchemy's wrapper and documentation link)."""
    orig = getattr(exc, "orig", None)  # DBAPIError: the psycopg / sqlite3 exception
    return f"{type(orig or exc).__name__}: {' '.join(str(orig or exc).split())}"


def _lock(conn: Connection) -> None:
    """Begin the upgrade's transaction holding the database's migration lock; it is released at commit or rollback."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:cls, hashtext(coalesce(current_schema(), '')))"), {"cls": LOCK_CLASS})
    elif conn.dialect.name == "sqlite":
        # The write lock now, not at the first write: a second migrator waits here (busy_timeout) and then sees our
        # result, instead of both reading "empty" and racing to create the tables. SQLite DDL is transactional.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _created_before_migrations(conn: Connection, name: str) -> bool:
    """True when the database has the tables of the code before migrations (and no version table: the caller knows)."""
    tables = set(inspect(conn).get_table_names())
    if "runs" not in tables:
        return False
    missing = [t for t in _scripts().get_revision(BASELINE).module.TABLES if t not in tables]
    if missing:
        raise MigrationError(f"{name}: has a runs table but no {VERSION_TABLE} and lacks {', '.join(missing)} of revision {BASELINE}: "
                             "not a CloudTune metrics database, or one from before that release; cannot tell its schema")
    return True
