"""One module per schema revision, 0001 onwards (Alembic loads them by path; this file only makes setuptools ship them)."""
