"""Run the plain SQL reports in sql/reports/ and format their result (pandas)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from sqlalchemy import text

from pipeline import config
from pipeline.store.db import get_engine, reap_interrupted

FORMATS = ("table", "csv", "json")


def reports_dir() -> Path:
    return config.sql_dir() / "reports"


def available() -> dict[str, str]:
    """Report name -> first comment line (its description)."""
    out = {}
    for path in sorted(reports_dir().glob("*.sql")):
        first = path.read_text().splitlines()[0] if path.stat().st_size else ""
        out[path.stem] = first.lstrip("- ").strip()
    return out


def resolve(name: str) -> Path:
    path = Path(name)
    if path.suffix == ".sql" and path.is_file():
        return path
    path = reports_dir() / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"report {name!r}: no such report (available: {', '.join(available())})")
    return path


def run_report(name: str, params: dict[str, str] | None = None, url: str | None = None) -> pd.DataFrame:
    """Execute one report; ``:name`` placeholders in the SQL are bound from ``params``.

    A comment line ``-- optional: a, b`` in the report names parameters that may be left out: they are bound to NULL
    (the SQL picks its default, e.g. ``COALESCE(:run_id, <latest run>)``)."""
    sql = resolve(name).read_text()
    wanted = set(re.findall(r"(?<!:):([A-Za-z_]\w*)", re.sub(r"--[^\n]*", "", sql)))
    optional = set(re.findall(r"\w+", " ".join(re.findall(r"^--\s*optional:(.*)$", sql, flags=re.M))))
    params = dict(params or {})
    missing = sorted(wanted - set(params) - optional)
    if missing:
        raise ValueError(f"report {name!r}: needs parameter(s) {', '.join(missing)} (pass --param {missing[0]}=VALUE)")
    with get_engine(url).connect() as conn:
        if re.search(r"\bruns\b", sql):  # a report on runs never shows a run whose process is gone as running (db.reap_interrupted)
            reap_interrupted(conn)
        return pd.read_sql_query(text(sql), conn, params={k: params.get(k) for k in wanted})


def format_frame(df: pd.DataFrame, fmt: str = "table") -> str:
    if fmt == "csv":
        return df.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return df.to_json(orient="records", date_format="iso", double_precision=6)
    if fmt != "table":
        raise ValueError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if df.empty:
        return "(no rows)"
    return df.to_string(index=False, float_format=lambda v: f"{v:.4g}")
