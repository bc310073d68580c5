"""The metrics schema, one definition for SQLite and PostgreSQL 15+.

`sql/schema.sql` is generated from this module (`cloudtune db schema > sql/schema.sql`) and a test
keeps the two identical, so analysts can read or paste plain SQL while the code has one source of truth.
Existing databases change only through migrations: a change here needs a revision in `migrations/versions/`
(see `migrations/env.py`); tests/test_migrations.py fails until the upgraded schema equals this module.
Conventions: ids are text, timestamps are UTC with time zone, metrics are long format.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
)

metadata = MetaData()

TS = DateTime(timezone=True)


def run_fk(*, key: bool = False, nullable: bool = False) -> Column:
    """The ``run_id`` column every result table carries; ``key`` makes it part of the primary key."""
    return Column("run_id", Text, ForeignKey("runs.run_id"), primary_key=key, nullable=nullable)


runs = Table(
    "runs",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("kind", Text, nullable=False),  # ingest | pipeline | nightly | train | ...
    Column("status", Text, nullable=False),  # running | succeeded | failed
    Column("config", JSON, nullable=False),
    Column("started_at", TS, nullable=False),
    Column("finished_at", TS),
    Column("message", Text),
    # The pipeline run this step ran for (a `train` or `evaluate` run has its own run_id and points here); NULL for a run of
    # its own. Last because migration 0002 appended it: fresh and upgraded databases have the same column order.
    Column("parent_run_id", Text),
    # The process that runs the step (a `recorded_run`) and the host it runs on, so that a run whose process died (kill -9, a lost
    # machine) is marked failed, "interrupted", by the next run of its step on that host (db.reap_interrupted). NULL for a DAG run's
    # own row (its tasks come and go) and older rows. Migration 0004.
    Column("host", Text),
    Column("pid", Integer),
    Index("ix_runs_parent_run_id", "parent_run_id"),
    comment="One row per run of any step; every metric row names its run.",
)

tracks = Table(
    "tracks",
    metadata,
    Column("track_id", Text, primary_key=True),  # first 16 hex digits of content_hash
    Column("catalog", Text, nullable=False),
    Column("source_uri", Text, nullable=False),  # the first file this content was found in
    Column("content_hash", Text, nullable=False, unique=True),  # XXH3-128 of the decoded PCM and its rate (hex)
    Column("duration_s", Double, nullable=False),
    Column("sample_rate", Integer, nullable=False),  # of the source file
    Column("channels", Integer, nullable=False),  # of the source file
    Column("source_format", Text, nullable=False),  # e.g. OGG/VORBIS
    Column("audio_path", Text, nullable=False),  # canonical mono FLAC, relative to CLOUDTUNE_HOME
    Column("ingest_run_id", Text, ForeignKey("runs.run_id"), nullable=False),
    Column("ingested_at", TS, nullable=False),
    Index("ix_tracks_catalog", "catalog"),
    comment="One row per unique audio content (canonical mono FLAC at the pipeline rate).",
)

ingest_sources = Table(
    "ingest_sources",
    metadata,
    Column("source_uri", Text, primary_key=True),
    Column("size_bytes", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("status", Text, nullable=False),  # track | duplicate | error
    Column("track_id", Text),
    Column("error_kind", Text),
    Column("seen_at", TS, nullable=False),
    comment="Every file ingest has looked at; an unchanged file (same size and mtime) is not decoded again.",
)

ingest_errors = Table(
    "ingest_errors",
    metadata,
    Column("error_id", Text, primary_key=True),
    run_fk(),
    Column("source_uri", Text, nullable=False),
    Column("error_kind", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("occurred_at", TS, nullable=False),
    Index("ix_ingest_errors_run", "run_id"),
    comment="One row per file that could not be ingested, with the reason.",
)

splits = Table(
    "splits",
    metadata,
    run_fk(key=True),
    Column("track_id", Text, primary_key=True),
    Column("split", Text, nullable=False),  # train | val | test
    Column("group_key", Text),
    comment="Track-level train/val/test assignment of a run.",
)

training_epochs = Table(
    "training_epochs",
    metadata,
    run_fk(key=True),
    Column("model", Text, primary_key=True),  # embedder | catalog_vae | tokenizer ...
    Column("epoch", Integer, primary_key=True),
    Column("train_loss", Double, nullable=False),
    Column("val_loss", Double),
    Column("val_recall_at_1", Double),
    Column("lr", Double),
    Column("seconds", Double, nullable=False),
    Column("recorded_at", TS, nullable=False),
    comment="Per-epoch training curves.",
)

index_builds = Table(
    "index_builds",
    metadata,
    run_fk(key=True),
    Column("embedder", Text, primary_key=True),
    Column("index_kind", Text, primary_key=True),  # flat | hnsw | ivfpq
    Column("params", JSON, nullable=False),
    Column("n_vectors", BigInteger, nullable=False),
    Column("dim", Integer, nullable=False),
    Column("build_seconds", Double, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("path", Text, nullable=False),
    Column("built_at", TS, nullable=False),
    comment="One row per FAISS index built.",
)

retrieval_metrics = Table(
    "retrieval_metrics",
    metadata,
    run_fk(key=True),
    Column("embedder", Text, primary_key=True),
    Column("index_kind", Text, primary_key=True),
    Column("query_set", Text, primary_key=True),  # e.g. 5s/pink0db
    Column("metric", Text, primary_key=True),  # recall | mrr | latency_p50_ms | ...
    Column("k", Integer, primary_key=True),  # the K of an @K metric, 0 where the metric has none
    Column("value", Double, nullable=False),
    Column("recorded_at", TS, nullable=False),
    comment="Long-format evaluation metrics: pivot with SQL.",
)

run_metrics = Table(
    "run_metrics",
    metadata,
    run_fk(key=True),
    Column("stage", Text, primary_key=True),  # tokenizer | tokenize | train | ...
    Column("metric", Text, primary_key=True),  # e.g. mel_snr_db, x_realtime
    Column("k", Integer, primary_key=True),  # e.g. the number of quantizer levels; 0 where none
    Column("value", Double, nullable=False),
    Column("recorded_at", TS, nullable=False),
    comment="Long-format metrics of any stage other than retrieval (codec quality, throughput).",
)

run_errors = Table(
    "run_errors",
    metadata,
    Column("error_id", Text, primary_key=True),
    run_fk(),
    Column("stage", Text, nullable=False),
    Column("item", Text, nullable=False),  # the track, file or chunk that failed
    Column("error_kind", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("occurred_at", TS, nullable=False),
    Index("ix_run_errors_run", "run_id"),
    comment="One row per item that failed in a step other than ingest; the step went on.",
)

asr_results = Table(
    "asr_results",
    metadata,
    Column("result_id", Text, primary_key=True),  # `cloudtune asr eval`: <run_id>:<manifest line>, so a re-run replaces its rows
    run_fk(nullable=True),
    Column("track_id", Text),
    Column("source_uri", Text, nullable=False),  # the audio file (absolute path)
    Column("model", Text, nullable=False),  # the recognizer's model id (a directory, hub id or the bundled model)
    Column("language", Text),  # the manifest's, else the one the recognizer named
    Column("text", Text),  # the hypothesis as the recognizer wrote it; NULL when the file failed (see error)
    Column("duration_s", Double),  # of the audio
    Column("seconds", Double),  # processing time
    Column("wer", Double),  # when a reference transcript was given (after asr_eval.normalize); NULL for a failed file
    Column("created_at", TS, nullable=False),
    # Last because migration 0003 appended them (fresh and upgraded databases have the same column order).
    Column("reference", Text),  # the manifest's reference transcript, as written
    Column("cer", Double),  # character error rate (spaces left out)
    Column("rtf", Double),  # real-time factor: seconds / duration_s
    Column("error", Text),  # one-line reason the file could not be transcribed; NULL when it was
    # the edit counts behind wer and cer, so that a corpus figure is a sum of edits over a sum of reference lengths (sql/reports/asr_summary.sql)
    Column("ref_words", Integer),  # words of the normalized reference
    Column("word_edits", Integer),  # substitutions + deletions + insertions of words
    Column("ref_chars", Integer),  # characters of the normalized reference, spaces left out
    Column("char_edits", Integer),
    Index("ix_asr_results_run", "run_id"),
    comment="One row per transcribed (or failed) file of an ASR run, with its WER and CER against the reference when one was given.",
)


vae_latents = Table(
    "vae_latents",
    metadata,
    run_fk(key=True),
    Column("track_id", Text, primary_key=True),
    Column("catalog", Text, nullable=False),
    Column("z1", Double, nullable=False),  # latent mean (the catalog map's coordinates)
    Column("z2", Double, nullable=False),
    Column("recon_error", Double, nullable=False),  # mean squared error of the standardized embedding decoded from its mean: outlier score
    Column("recorded_at", TS, nullable=False),
    comment="The catalog VAE's 2-D latent mean and reconstruction error of each track embedding of a run.",
)
