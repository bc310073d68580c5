"""Alembic migration scripts of the metrics schema (see README.md here); run them through `pipeline.store.migrate`."""
