-- CloudTune metrics schema. Generated from pipeline/store/tables.py by `cloudtune db schema`;
-- tests/test_store.py keeps this file identical to the code. Runs unchanged on SQLite and PostgreSQL 15+.

-- ingest_sources: Every file ingest has looked at; an unchanged file (same size and mtime) is not decoded again.
CREATE TABLE ingest_sources (
    source_uri TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    status TEXT NOT NULL,
    track_id TEXT,
    error_kind TEXT,
    seen_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (source_uri)
);

-- runs: One row per run of any step; every metric row names its run.
CREATE TABLE runs (
    run_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    config JSON NOT NULL,
    started_at TIMESTAMP WITH TIME ZONE NOT NULL,
    finished_at TIMESTAMP WITH TIME ZONE,
    message TEXT,
    parent_run_id TEXT,
    host TEXT,
    pid INTEGER,
    PRIMARY KEY (run_id)
);
CREATE INDEX ix_runs_parent_run_id ON runs (parent_run_id);

-- asr_results: One row per transcribed (or failed) file of an ASR run, with its WER and CER against the reference when one was given.
CREATE TABLE asr_results (
    result_id TEXT NOT NULL,
    run_id TEXT,
    track_id TEXT,
    source_uri TEXT NOT NULL,
    model TEXT NOT NULL,
    language TEXT,
    text TEXT,
    duration_s DOUBLE PRECISION,
    seconds DOUBLE PRECISION,
    wer DOUBLE PRECISION,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    reference TEXT,
    cer DOUBLE PRECISION,
    rtf DOUBLE PRECISION,
    error TEXT,
    ref_words INTEGER,
    word_edits INTEGER,
    ref_chars INTEGER,
    char_edits INTEGER,
    PRIMARY KEY (result_id),
    FOREIGN KEY(run_id) REFERENCES runs (run_id)
);
CREATE INDEX ix_asr_results_run ON asr_results (run_id);

-- index_builds: One row per FAISS index built.
CREATE TABLE index_builds (
    run_id TEXT NOT NULL,
    embedder TEXT NOT NULL,
    index_kind TEXT NOT NULL,
    params JSON NOT NULL,
    n_vectors BIGINT NOT NULL,
    dim INTEGER NOT NULL,
    build_seconds DOUBLE PRECISION NOT NULL,
    bytes BIGINT NOT NULL,
    path TEXT NOT NULL,
    built_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (run_id, embedder, index_kind),
    FOREIGN KEY(run_id) REFERENCES runs (run_id)
);

-- ingest_errors: One row per file that could not be ingested, with the reason.
CREATE TABLE ingest_errors (
    error_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    source_uri TEXT NOT NULL,
    error_kind TEXT NOT NULL,
    message TEXT NOT NULL,
    occurred_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (error_id),
    FOREIGN KEY(run_id) REFERENCES runs (run_id)
);
CREATE INDEX ix_ingest_errors_run ON ingest_errors (run_id);

-- retrieval_metrics: Long-format evaluation metrics: pivot with SQL.
CREATE TABLE retrieval_metrics (
    run_id TEXT NOT NULL,
    embedder TEXT NOT NULL,
    index_kind TEXT NOT NULL,
    query_set TEXT NOT NULL,
    metric TEXT NOT NULL,
    k INTEGER NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    recorded_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (run_id, embedder, index_kind, query_set, metric, k),
    FOREIGN KEY(run_id) REFERENCES runs (run_id)
);

-- run_errors: One row per item that failed in a step other than ingest; the step went on.
CREATE TABLE run_errors (
    error_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    item TEXT NOT NULL,
    error_kind TEXT NOT NULL,
    message TEXT NOT NULL,
    occurred_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (error_id),
    FOREIGN KEY(run_id) REFERENCES runs (run_id)
);
CREATE INDEX ix_run_errors_run ON run_errors (run_id);

-- run_metrics: Long-format metrics of any stage other than retrieval (codec quality, throughput).
CREATE TABLE run_metrics (
    run_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    metric TEXT NOT NULL,
    k INTEGER NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    recorded_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (run_id, stage, metric, k),
    FOREIGN KEY(run_id) REFERENCES runs (run_id)
);

-- splits: Track-level train/val/test assignment of a run.
CREATE TABLE splits (
    run_id TEXT NOT NULL,
    track_id TEXT NOT NULL,
    split TEXT NOT NULL,
    group_key TEXT,
    PRIMARY KEY (run_id, track_id),
    FOREIGN KEY(run_id) REFERENCES runs (run_id)
);

-- tracks: One row per unique audio content (canonical mono FLAC at the pipeline rate).
CREATE TABLE tracks (
    track_id TEXT NOT NULL,
    catalog TEXT NOT NULL,
    source_uri TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    duration_s DOUBLE PRECISION NOT NULL,
    sample_rate INTEGER NOT NULL,
    channels INTEGER NOT NULL,
    source_format TEXT NOT NULL,
    audio_path TEXT NOT NULL,
    ingest_run_id TEXT NOT NULL,
    ingested_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (track_id),
    UNIQUE (content_hash),
    FOREIGN KEY(ingest_run_id) REFERENCES runs (run_id)
);
CREATE INDEX ix_tracks_catalog ON tracks (catalog);

-- training_epochs: Per-epoch training curves.
CREATE TABLE training_epochs (
    run_id TEXT NOT NULL,
    model TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    train_loss DOUBLE PRECISION NOT NULL,
    val_loss DOUBLE PRECISION,
    val_recall_at_1 DOUBLE PRECISION,
    lr DOUBLE PRECISION,
    seconds DOUBLE PRECISION NOT NULL,
    recorded_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (run_id, model, epoch),
    FOREIGN KEY(run_id) REFERENCES runs (run_id)
);

-- vae_latents: The catalog VAE's 2-D latent mean and reconstruction error of each track embedding of a run.
CREATE TABLE vae_latents (
    run_id TEXT NOT NULL,
    track_id TEXT NOT NULL,
    catalog TEXT NOT NULL,
    z1 DOUBLE PRECISION NOT NULL,
    z2 DOUBLE PRECISION NOT NULL,
    recon_error DOUBLE PRECISION NOT NULL,
    recorded_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (run_id, track_id),
    FOREIGN KEY(run_id) REFERENCES runs (run_id)
);

-- cloudtune_alembic_version: The schema revision (pipeline/store/migrations) this database is at; Alembic keeps it.
CREATE TABLE cloudtune_alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT cloudtune_alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO cloudtune_alembic_version (version_num) VALUES ('0004');
