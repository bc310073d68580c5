import json

import pytest
from sqlalchemy import create_engine, func, inspect, select, text

from pipeline import config, paths
from pipeline.store import db, migrate, reports
from pipeline.store.tables import retrieval_metrics, runs, tracks

EXPECTED_TABLES = {
    "runs", "tracks", "ingest_sources", "ingest_errors", "splits", "training_epochs", "index_builds", "retrieval_metrics", "asr_results",
    "run_metrics", "run_errors", "vae_latents", migrate.VERSION_TABLE,
}


def test_schema_sql_is_generated_from_the_code():
    on_disk = (config.sql_dir() / "schema.sql").read_text()
    assert on_disk == db.schema_sql(), "sql/schema.sql is stale: run `cloudtune db schema > sql/schema.sql`"


def _sqlite_affinity(declared: str) -> str:
    """SQLite stores by type affinity (https://sqlite.org/datatype3.html#determination_of_column_affinity)."""
    t = declared.upper()
    if "INT" in t:
        return "INTEGER"
    if any(s in t for s in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in t or not t:
        return "BLOB"
    if any(s in t for s in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def _shape(engine):
    """Tables, columns, keys and indexes as reflected; SQLite column types compared by affinity."""
    insp = inspect(engine)
    typ = _sqlite_affinity if engine.dialect.name == "sqlite" else str
    out = {}
    for table in sorted(insp.get_table_names()):
        out[table] = {
            "columns": [(c["name"], typ(str(c["type"])), c["nullable"]) for c in insp.get_columns(table)],
            "pk": insp.get_pk_constraint(table)["constrained_columns"],
            "fks": sorted((tuple(f["constrained_columns"]), f["referred_table"]) for f in insp.get_foreign_keys(table)),
            "indexes": sorted((i["name"], tuple(i["column_names"])) for i in insp.get_indexes(table)),
            "unique": sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(table)),
        }
    return out


def _run_schema_sql(url):
    engine = create_engine(db.normalize_url(url))
    script = (config.sql_dir() / "schema.sql").read_text()
    raw = engine.raw_connection()
    try:
        if engine.dialect.name == "sqlite":
            raw.driver_connection.executescript(script)
        else:
            with raw.cursor() as cur:
                cur.execute(script)
        raw.commit()
    finally:
        raw.close()
    return engine


def test_schema_sql_runs_and_matches_the_code_on_sqlite(tmp_path):
    from_sql = _run_schema_sql(f"sqlite:///{tmp_path / 'a.db'}")
    from_code = db.get_engine(f"sqlite:///{tmp_path / 'b.db'}")
    assert set(_shape(from_sql)) == EXPECTED_TABLES
    assert _shape(from_sql) == _shape(from_code)


@pytest.mark.postgres
def test_schema_sql_runs_and_matches_the_code_on_postgres(pg_admin, pg_url):
    base, schema = pg_url.rsplit("search_path%3D", 1)
    other = f"{schema}_b"  # a second, separate schema (pg_url is one schema per test, however often it is asked for)
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{other}"'))
    try:
        from_sql = _run_schema_sql(pg_url)
        from_code = db.get_engine(f"{base}search_path%3D{other}")
        assert set(_shape(from_sql)) == EXPECTED_TABLES
        assert _shape(from_sql) == _shape(from_code)
        from_sql.dispose()
    finally:
        db.dispose_engines()
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{other}" CASCADE'))


def test_init_is_idempotent(db_url):
    engine = db.get_engine(db_url)
    db.init_db(engine)
    db.init_db(engine)
    assert EXPECTED_TABLES <= set(inspect(engine).get_table_names())


def test_normalize_url():
    assert db.normalize_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert db.normalize_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert db.normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_runs_and_upsert_are_idempotent(db_url):
    with db.connect(db_url) as conn:
        run_id = db.start_run(conn, "test", {"path": paths.home(), "levels": (1, 2)})
        row = conn.execute(select(runs).where(runs.c.run_id == run_id)).one()
        assert row.status == "running" and row.config == {"path": str(paths.home()), "levels": [1, 2]}
        metric = {"run_id": run_id, "embedder": "mel-stats", "index_kind": "flat", "query_set": "5s/clean", "metric": "recall", "k": 10}
        db.upsert(conn, retrieval_metrics, [{**metric, "value": 0.5, "recorded_at": db.utcnow()}])
        db.upsert(conn, retrieval_metrics, [{**metric, "value": 0.75, "recorded_at": db.utcnow()}])
        conn.commit()
        assert conn.execute(select(func.count()).select_from(retrieval_metrics)).scalar() == 1
        assert conn.execute(select(retrieval_metrics.c.value)).scalar() == 0.75
        db.finish_run(conn, run_id, "succeeded", "done")
        row = conn.execute(select(runs).where(runs.c.run_id == run_id)).one()
        assert row.status == "succeeded" and row.finished_at >= row.started_at


def _seed_rows(url):
    with db.connect(url) as conn:
        run_id = db.start_run(conn, "ingest", {})
        now = db.utcnow()
        common = {"catalog": "demo", "sample_rate": 44100, "channels": 2, "ingest_run_id": run_id, "ingested_at": now}
        rows = [("t1", "a.wav", 7200.0, "WAV/PCM_16"), ("t2", "b.wav", 1800.0, "OGG/VORBIS")]
        conn.execute(tracks.insert(), [
            {**common, "track_id": t, "source_uri": f"file:///{name}", "content_hash": f"h{t}", "duration_s": secs, "source_format": fmt,
             "audio_path": f"audio/{t}.flac"}
            for t, name, secs, fmt in rows
        ])
        conn.execute(text("INSERT INTO ingest_errors VALUES ('e1', :r, 'file:///bad.wav', 'not_audio', 'not an audio file', :now)"), {"r": run_id, "now": now})
        conn.commit()


def test_every_report_runs_on_both_databases(db_url):
    _seed_rows(db_url)
    names = reports.available()
    assert {"catalog_summary", "ingest_errors", "runs"} <= set(names)
    assert all(names.values()), "every report starts with a one-line description comment"
    for name in names:
        reports.run_report(name, url=db_url)
    summary = reports.run_report("catalog_summary", url=db_url)
    row = summary.iloc[0]
    assert (row["catalog"], row["tracks"], float(row["hours"]), row["formats"]) == ("demo", 2, 2.5, 2)
    errors = reports.run_report("ingest_errors", url=db_url)
    assert errors.iloc[0]["latest_example"] == "file:///bad.wav: not an audio file"


def test_report_formats_and_errors(db_url, tmp_path):
    _seed_rows(db_url)
    df = reports.run_report("catalog_summary", url=db_url)
    assert json.loads(reports.format_frame(df, "json"))[0]["tracks"] == 2
    assert reports.format_frame(df, "csv").splitlines()[0].startswith("catalog,tracks,hours")
    assert "demo" in reports.format_frame(df, "table")
    custom = tmp_path / "by_catalog.sql"
    custom.write_text("-- tracks of one catalog\nSELECT track_id FROM tracks WHERE catalog = :catalog ORDER BY track_id")
    assert list(reports.run_report(str(custom), {"catalog": "demo"}, url=db_url)["track_id"]) == ["t1", "t2"]
    with pytest.raises(ValueError, match="needs parameter"):
        reports.run_report(str(custom), url=db_url)
    optional = tmp_path / "optional.sql"
    optional.write_text("-- tracks of one catalog, default all\n-- optional: catalog\n"
                        "SELECT track_id FROM tracks WHERE catalog = COALESCE(:catalog, catalog) ORDER BY track_id")
    assert list(reports.run_report(str(optional), url=db_url)["track_id"]) == ["t1", "t2"]
    assert list(reports.run_report(str(optional), {"catalog": "other"}, url=db_url)["track_id"]) == []
    with pytest.raises(FileNotFoundError, match="no such report.*available: .*catalog_summary"):
        reports.run_report("nope", url=db_url)
