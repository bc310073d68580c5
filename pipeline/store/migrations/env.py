"""Alembic environment of the metrics schema, configured in code (no alembic.ini).

`pipeline.store.migrate` runs Alembic commands with the open connection in ``config.attributes["connection"]``
(inside its transaction and lock); this file only hands that connection to Alembic. There is no offline (--sql) mode.

Adding a revision (the whole procedure):
 1. change `pipeline/store/tables.py`;
 2. `cloudtune db revision -m "what changed"` writes `versions/000N_what_changed.py` (or copy the newest revision by hand:
    next number as ``revision``, the previous one as ``down_revision``); write its upgrade() and downgrade() with `op.*`,
    spelled out (never import tables.py: a revision must not change when tables.py changes later);
 3. `make schema` regenerates sql/schema.sql;
 4. run tests/test_migrations.py: it upgrades real SQLite and PostgreSQL DBs and compares them with tables.py
    (alembic's compare_metadata), so a tables.py change without a revision, or a revision that differs from it, fails.
Databases upgrade themselves on first use (`db.get_engine`) or with `cloudtune db upgrade`.
"""

from __future__ import annotations

from alembic import context

from pipeline.store.migrate import VERSION_TABLE
from pipeline.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("pipeline/store/migrations: run Alembic through pipeline.store.migrate (cloudtune db upgrade), which passes the connection")

# render_as_batch: SQLite cannot ALTER most things; batch mode (copy the table) is how revisions must change it there.
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():  # a no-op inside migrate's transaction, which commits or rolls back the whole upgrade
    context.run_migrations()
