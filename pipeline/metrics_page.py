"""The "Retrieval metrics" page of the Airflow UI (plugins/cloudtune_metrics.py serves it): the latest run's Recall@K / MRR
table, its per-query-set table (degradation x query length, Recall@1, failing cells marked) for one embedder and index
kind, its choice by merit, and trend charts over all runs, read from the metrics DB (CLOUDTUNE_DB_URL) with
sql/reports/retrieval_trend.sql, retrieval_run.sql and retrieval_sets.sql. Plain HTML with inline SVG charts
(matplotlib), no JavaScript. The fail mark's threshold is configs/airflow.yaml ``metrics_page.fail_below``."""

from __future__ import annotations

import html
import io

from pipeline import config

METRICS = (("recall_at_1", "Recall@1"), ("recall_at_10", "Recall@10"), ("mrr", "MRR"))
STYLE = ("body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}table{border-collapse:collapse;margin:.5rem 0 1.5rem}"
         "td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}"
         ".charts{display:flex;flex-wrap:wrap;gap:1rem}.muted{color:#777}td.fail{background:#f6c9c9;color:#7a0000;font-weight:600}"
         "td.pass{background:#e4f4e4}tr.worst td{border-top:2px solid #999}.sel{font-weight:700}table.sets td{text-align:right}"
         "table.sets td:first-child{text-align:left}")


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


def _cell(value, fail_below: float, title: str = "") -> str:
    if value is None or value != value:  # missing, or NaN from the pivot
        return "<td class='muted'>&ndash;</td>"
    tip = f" title='{html.escape(title)}'" if title else ""
    return f"<td class='{'fail' if value < fail_below else 'pass'}'{tip}>{value:.4f}</td>"


def sets_table(sets, embedder: str, kind: str, fail_below: float) -> str:
    """Recall@1 of one (embedder, index kind): a row per degradation (clean first), a column per query length, cells under
    ``fail_below`` marked ``fail``; the last row is the worst degraded set of each length."""
    mine = sets[(sets.embedder == embedder) & (sets.index_kind == kind)]
    lengths = sorted(set(mine.length_s))
    degradations = sorted(set(mine.degradation), key=lambda d: (d != "clean", d))
    value = {(r.degradation, r.length_s): r for r in mine.itertuples()}
    head = "<tr><th>degradation</th>" + "".join(f"<th>{x:g} s</th>" for x in lengths) + "</tr>"
    rows = []
    def title(r) -> str:
        more = [f"{label} {v:{fmt}}" for label, v, fmt in (("queries", r.queries, ".0f"), ("Recall@10", r.recall_at_10, ".4f"), ("MRR", r.mrr, ".4f"),
                                                           ("offset hit", getattr(r, "offset_hit", None), ".4f"))
                if v is not None and v == v]
        return f"{r.query_set}: {', '.join(more)}"

    for d in degradations:
        cells = "".join(_cell(value[d, x].recall_at_1, fail_below, title(value[d, x])) if (d, x) in value else _cell(None, fail_below) for x in lengths)
        rows.append(f"<tr><td>{html.escape(d)}</td>{cells}</tr>")
    worst = [mine[(mine.length_s == x) & (mine.degradation != "clean")].recall_at_1.min() for x in lengths]
    rows.append("<tr class='worst'><td>worst degraded</td>" + "".join(_cell(w, fail_below) for w in worst) + "</tr>")
    return f"<table class='sets'>{head}{''.join(rows)}</table>"


def choice_html(choice: dict | None) -> str:
    if not choice:
        return "<p class='muted'>No choice by merit in this run's evaluation.json (not found here, or evaluated before publishing by merit).</p>"
    return (f"<p><b>Choice by merit</b> ({html.escape(choice['criterion'])}): {html.escape(choice['embedder'])} / "
            f"{html.escape(choice['index_kind'])}, {choice['score']:.4f}. {html.escape(choice['reason'])}</p>")


def render(run_id: str | None = None, url: str | None = None, embedder: str | None = None, kind: str | None = None) -> str:
    """The page: ``run_id``'s tables (default: the latest run with retrieval metrics) and the trend charts. The per-set table is
    of ``embedder`` / ``kind`` (default: the run's choice by merit, else its first pair); an unknown run or pair is a LookupError."""
    from pipeline.publish import evaluation_choice
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
    sets = reports.run_report("retrieval_sets", {"run_id": run_id}, url=url)
    choice = evaluation_choice(run_id)
    pairs = list(dict.fromkeys(zip(sets.embedder, sets.index_kind, strict=True)))
    preferred = [(choice["embedder"], choice["index_kind"])] if choice else []
    wanted = [p for p in [*preferred, *pairs] if embedder in (None, p[0]) and kind in (None, p[1]) and p in pairs]
    if not wanted and (embedder or kind):
        raise LookupError(f"run {run_id}: no query-set metrics of embedder {embedder or 'any'}, index kind {kind or 'any'}")
    fail_below = config.load_airflow().metrics_page.fail_below
    per_set = ""
    if wanted:
        emb, knd = wanted[0]
        picker = " ".join(f"<a class='{'sel' if p == (emb, knd) else ''}' href='?run_id={html.escape(run_id)}&amp;embedder={html.escape(p[0])}&amp;"
                          f"kind={html.escape(p[1])}'>{html.escape(p[0])} / {html.escape(p[1])}</a>" + (" (choice)" if p in preferred else "")
                          for p in pairs)
        per_set = (f"<h3>Per query set: {html.escape(emb)} / {html.escape(knd)}</h3><p class='muted'>Recall@1 per degradation and query length; "
                   f"marked where below {fail_below:g} (configs/airflow.yaml metrics_page.fail_below). Same table: "
                   f"<code>cloudtune report retrieval_sets --param run_id={html.escape(run_id)}</code>.</p><p>{picker}</p>"
                   + sets_table(sets, emb, knd, fail_below))
    runs = list(dict.fromkeys(trend.run_id))[::-1]
    links = " ".join(f"<a href='?run_id={html.escape(r)}'>{html.escape(r)}</a>" for r in runs[:20])
    charts = "".join(f"<div>{trend_chart(trend, c, label)}</div>" for c, label in METRICS)
    return (head + f"<h1>Retrieval metrics</h1><p class='muted'>Metrics DB: {where}. Mean over the query sets (clip length x degradation).</p>"
            f"<h2>Run {html.escape(run_id)}</h2><table><tr>{''.join(f'<th>{c}</th>' for c in cols)}</tr>{rows}</table>"
            f"{choice_html(choice)}{per_set}"
            f"<p>Runs: {links}</p><h2>Trend</h2><div class='charts'>{charts}</div></body></html>")
