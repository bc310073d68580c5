"""Metrics store: SQLAlchemy Core tables, engine, run bookkeeping and SQL reports."""

from pipeline.store.db import (
    connect,
    finish_run,
    get_engine,
    init_db,
    new_run_id,
    start_run,
    upsert,
)
from pipeline.store.tables import metadata

__all__ = ["connect", "finish_run", "get_engine", "init_db", "metadata", "new_run_id", "start_run", "upsert"]
