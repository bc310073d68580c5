"""runs.host, runs.pid: the process that runs a step, so that a run whose process died is marked failed ("interrupted").

Revision ID: 0004
Revises: 0003

Both nullable (older rows and DAG runs' own rows have none), added at the end with a plain ALTER TABLE on SQLite too.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("host", sa.Text(), nullable=True))
    op.add_column("runs", sa.Column("pid", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "pid")  # SQLite 3.35+ drops a plain column in place
    op.drop_column("runs", "host")
