"""Baseline: the metrics schema as it was before migrations (tables.py's create_all), written out.

Revision ID: 0001
Revises: (none)

Spelled out on purpose, not ``metadata.create_all``: this revision must stay what it is when tables.py changes.
A database created by the code before migrations has exactly these tables; `migrate` stamps it 0001 instead of running this.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
# What upgrade() creates, in order (runs first: the others reference it). `migrate` checks that a database created before
# migrations has all of them before stamping it 0001.
TABLES = ("runs", "tracks", "ingest_sources", "ingest_errors", "splits", "training_epochs", "index_builds", "retrieval_metrics", "run_metrics",
          "run_errors", "asr_results", "vae_latents")


def _run_fk(nullable: bool = False) -> sa.Column:
    return sa.Column("run_id", sa.Text(), sa.ForeignKey("runs.run_id"), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("run_id"),
        comment="One row per run of any step; every metric row names its run.",
    )
    op.create_table(
        "tracks",
        sa.Column("track_id", sa.Text(), nullable=False),
        sa.Column("catalog", sa.Text(), nullable=False),
        sa.Column("source_uri", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.Text(), nullable=False),
        sa.Column("duration_s", sa.Double(), nullable=False),
        sa.Column("sample_rate", sa.Integer(), nullable=False),
        sa.Column("channels", sa.Integer(), nullable=False),
        sa.Column("source_format", sa.Text(), nullable=False),
        sa.Column("audio_path", sa.Text(), nullable=False),
        sa.Column("ingest_run_id", sa.Text(), sa.ForeignKey("runs.run_id"), nullable=False),
        sa.Column("ingested_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("track_id"),
        sa.UniqueConstraint("content_hash"),
        comment="One row per unique audio content (canonical mono FLAC at the pipeline rate).",
    )
    op.create_index("ix_tracks_catalog", "tracks", ["catalog"])
    op.create_table(
        "ingest_sources",
        sa.Column("source_uri", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("track_id", sa.Text(), nullable=True),
        sa.Column("error_kind", sa.Text(), nullable=True),
        sa.Column("seen_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("source_uri"),
        comment="Every file ingest has looked at; an unchanged file (same size and mtime) is not decoded again.",
    )
    op.create_table(
        "ingest_errors",
        sa.Column("error_id", sa.Text(), nullable=False),
        _run_fk(),
        sa.Column("source_uri", sa.Text(), nullable=False),
        sa.Column("error_kind", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("error_id"),
        comment="One row per file that could not be ingested, with the reason.",
    )
    op.create_index("ix_ingest_errors_run", "ingest_errors", ["run_id"])
    op.create_table(
        "splits",
        _run_fk(),
        sa.Column("track_id", sa.Text(), nullable=False),
        sa.Column("split", sa.Text(), nullable=False),
        sa.Column("group_key", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "track_id"),
        comment="Track-level train/val/test assignment of a run.",
    )
    op.create_table(
        "training_epochs",
        _run_fk(),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("train_loss", sa.Double(), nullable=False),
        sa.Column("val_loss", sa.Double(), nullable=True),
        sa.Column("val_recall_at_1", sa.Double(), nullable=True),
        sa.Column("lr", sa.Double(), nullable=True),
        sa.Column("seconds", sa.Double(), nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "model", "epoch"),
        comment="Per-epoch training curves.",
    )
    op.create_table(
        "index_builds",
        _run_fk(),
        sa.Column("embedder", sa.Text(), nullable=False),
        sa.Column("index_kind", sa.Text(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("n_vectors", sa.BigInteger(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("build_seconds", sa.Double(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("built_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "embedder", "index_kind"),
        comment="One row per FAISS index built.",
    )
    op.create_table(
        "retrieval_metrics",
        _run_fk(),
        sa.Column("embedder", sa.Text(), nullable=False),
        sa.Column("index_kind", sa.Text(), nullable=False),
        sa.Column("query_set", sa.Text(), nullable=False),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "embedder", "index_kind", "query_set", "metric", "k"),
        comment="Long-format evaluation metrics: pivot with SQL.",
    )
    op.create_table(
        "run_metrics",
        _run_fk(),
        sa.Column("stage", sa.Text(), nullable=False),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "stage", "metric", "k"),
        comment="Long-format metrics of any stage other than retrieval (codec quality, throughput).",
    )
    op.create_table(
        "run_errors",
        sa.Column("error_id", sa.Text(), nullable=False),
        _run_fk(),
        sa.Column("stage", sa.Text(), nullable=False),
        sa.Column("item", sa.Text(), nullable=False),
        sa.Column("error_kind", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("error_id"),
        comment="One row per item that failed in a step other than ingest; the step went on.",
    )
    op.create_index("ix_run_errors_run", "run_errors", ["run_id"])
    op.create_table(
        "asr_results",
        sa.Column("result_id", sa.Text(), nullable=False),
        _run_fk(nullable=True),
        sa.Column("track_id", sa.Text(), nullable=True),
        sa.Column("source_uri", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("language", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("duration_s", sa.Double(), nullable=True),
        sa.Column("seconds", sa.Double(), nullable=True),
        sa.Column("wer", sa.Double(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("result_id"),
        comment="Transcriptions.",
    )
    op.create_table(
        "vae_latents",
        _run_fk(),
        sa.Column("track_id", sa.Text(), nullable=False),
        sa.Column("catalog", sa.Text(), nullable=False),
        sa.Column("z1", sa.Double(), nullable=False),
        sa.Column("z2", sa.Double(), nullable=False),
        sa.Column("recon_error", sa.Double(), nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "track_id"),
        comment="The catalog VAE's 2-D latent mean and reconstruction error of each track embedding of a run.",
    )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)  # their indexes go with them
