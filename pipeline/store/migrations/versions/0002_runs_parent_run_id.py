"""runs.parent_run_id: the pipeline run a step (train, evaluate, ...) ran for; NULL for runs of their own and older rows.

Revision ID: 0002
Revises: 0001

Text like run_id, nullable and indexed (a pipeline run's steps are looked up by it); no foreign key, so that
SQLite can add it with a plain ALTER TABLE (no copy of `runs`, which every result table references).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("parent_run_id", sa.Text(), nullable=True))
    op.create_index("ix_runs_parent_run_id", "runs", ["parent_run_id"])


def downgrade() -> None:
    op.drop_index("ix_runs_parent_run_id", table_name="runs")
    op.drop_column("runs", "parent_run_id")  # SQLite 3.35+ drops a plain column in place
