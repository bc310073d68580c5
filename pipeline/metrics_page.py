"""The "Retrieval metrics" page of the Airflow UI (plugins/cloudtune_metrics.py serves it): the latest run's Recall@K / MRR
table and trend charts over all runs, read from the metrics DB (CLOUDTUNE_DB_URL) with sql/reports/retrieval_trend.sql
and retrieval_run.sql. Plain HTML with inline SVG charts (matplotlib), no JavaScript."""

from __future__ import annotations

import html
import io

from pipeline import config

METRICS = (("recall_at_1", "Recall@1"), ("recall_at_10", "Recall@10"), ("mrr", "MRR"))
STYLE = ("body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}table{border-collapse:collapse;margin:.5rem 0 1.5rem}"
         "td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}"
         ".charts{display:flex;flex-wrap:wrap;gap:1rem}.muted{color:#777}")


def trend_chart(trend, column: str, label: str) -> str:
    """One SVG line chart: ``column`` per run (x: runs in start order) for each embedder/index kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = list(dict.fromkeys(trend.run_id))
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for (emb, kind), rows in trend.groupby(["embedder", "index_kind"], sort=True):
        ax.plot([runs.index(r) for r in rows.run_id], rows[column], marker="o", label=f"{emb} / {kind}")
    ax.set_title(f"{label} per run")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(range(len(runs)), [r[-18:] for r in runs], rotation=30, ha="right", fontsize=7)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


def render(run_id: str | None = None, url: str | None = None) -> str:
    """The page: ``run_id``'s table (default: the latest run with retrieval metrics) and the trend charts."""
    from pipeline.store import reports

    trend = reports.run_report("retrieval_trend", url=url)
    head = f"<!doctype html><html><head><meta charset='utf-8'><title>Retrieval metrics</title><style>{STYLE}</style></head><body>"
    where = html.escape(config.db_url().split("@")[-1])
    if trend.empty:
        return head + f"<h1>Retrieval metrics</h1><p class='muted'>No retrieval metrics yet in {where}: trigger audio_retrieval.</p></body></html>"
    run_id = run_id or trend.run_id.iloc[-1]
    table = reports.run_report("retrieval_run", {"run_id": run_id}, url=url)
    if table.empty:
        raise LookupError(f"run {run_id}: no retrieval metrics")
    cols = ["embedder", "index_kind", "query_sets", "recall_at_1", "recall_at_10", "recall_at_100", "mrr"]
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(f'{v:.4f}' if isinstance(v, float) else str(v))}</td>" for v in r) + "</tr>"
                   for r in table[cols].itertuples(index=False))
    runs = list(dict.fromkeys(trend.run_id))[::-1]
    links = " ".join(f"<a href='?run_id={html.escape(r)}'>{html.escape(r)}</a>" for r in runs[:20])
    charts = "".join(f"<div>{trend_chart(trend, c, label)}</div>" for c, label in METRICS)
    return (head + f"<h1>Retrieval metrics</h1><p class='muted'>Metrics DB: {where}. Mean over the query sets (clip length x degradation).</p>"
            f"<h2>Run {html.escape(run_id)}</h2><table><tr>{''.join(f'<th>{c}</th>' for c in cols)}</tr>{rows}</table>"
            f"<p>Runs: {links}</p><h2>Trend</h2><div class='charts'>{charts}</div></body></html>")
