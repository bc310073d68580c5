"""asr_results for `cloudtune asr eval`: the reference, CER, real-time factor, error and edit counts of each file; text nullable (a failed file
has none); an index on run_id (reports and re-runs select a run's rows).

Revision ID: 0003
Revises: 0002

Columns are only added (at the end) and relaxed, never renamed, so rows written before stay readable as they were. On SQLite,
making `text` nullable copies the table (Alembic's batch mode); `asr_results` is referenced by no other table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OLD_COMMENT = "Transcriptions."
COMMENT = "One row per transcribed (or failed) file of an ASR run, with its WER and CER against the reference when one was given."


def upgrade() -> None:
    with op.batch_alter_table("asr_results") as batch:
        batch.alter_column("text", existing_type=sa.Text(), nullable=True)
        batch.add_column(sa.Column("reference", sa.Text(), nullable=True))
        batch.add_column(sa.Column("cer", sa.Double(), nullable=True))
        batch.add_column(sa.Column("rtf", sa.Double(), nullable=True))
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
        for column in ("ref_words", "word_edits", "ref_chars", "char_edits"):
            batch.add_column(sa.Column(column, sa.Integer(), nullable=True))
    op.create_index("ix_asr_results_run", "asr_results", ["run_id"])
    if op.get_bind().dialect.name != "sqlite":  # SQLite keeps no table comments
        op.create_table_comment("asr_results", COMMENT, existing_comment=OLD_COMMENT)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.create_table_comment("asr_results", OLD_COMMENT, existing_comment=COMMENT)
    op.drop_index("ix_asr_results_run", table_name="asr_results")
    op.execute("DELETE FROM asr_results WHERE text IS NULL")  # a failed file's row: the old schema's text is NOT NULL
    with op.batch_alter_table("asr_results") as batch:
        for column in ("char_edits", "ref_chars", "word_edits", "ref_words", "error", "rtf", "cer", "reference"):
            batch.drop_column(column)
        batch.alter_column("text", existing_type=sa.Text(), nullable=False)
