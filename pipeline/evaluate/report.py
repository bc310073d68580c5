"""The evaluation's HTML report: tables and plots in one self-contained file (images inlined)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline import paths  # noqa: E402
from pipeline.evaluate.sets import degradation_of, length_of  # noqa: E402
from pipeline.fsutil import write_text  # noqa: E402
from pipeline.plots import inline_png  # noqa: E402


def _png(fig) -> str:
    img = inline_png(fig, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return img


def recall_plot(df: pd.DataFrame, length: str) -> str:
    """Recall@1 per degradation, one bar per embedder (exact index)."""
    d = df[(df.index_kind == "flat") & (df.metric == "recall") & (df.k == 1) & df.query_set.str.startswith(f"{length}/")]
    table = d.assign(degradation=d.query_set.map(degradation_of)).pivot_table(index="degradation", columns="embedder", values="value", sort=False)
    fig, ax = plt.subplots(figsize=(10, 3.6))
    table.plot.bar(ax=ax, width=0.8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("Recall@1")
    ax.set_title(f"{length} queries: Recall@1 per degradation (exact index)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower left")
    return _png(fig)


def _lengths(df: pd.DataFrame) -> pd.DataFrame:
    """Recall@1 of the exact index per embedder, degradation and query length (seconds), from the ``<length>s/<degradation>`` sets."""
    d = df[(df.index_kind == "flat") & (df.metric == "recall") & (df.k == 1)]
    d = d.assign(length_s=d.query_set.map(length_of), degradation=d.query_set.map(degradation_of))
    return d[d.length_s.notna()]


def length_plot(df: pd.DataFrame) -> str:
    """Recall@1 (exact index) against query length, one panel per embedder, one line per degradation."""
    d = _lengths(df)
    embedders, degradations = list(dict.fromkeys(d.embedder)), list(dict.fromkeys(d.degradation))
    colors = plt.get_cmap("tab10").colors + plt.get_cmap("tab20").colors[1::2]  # one colour per degradation in every panel; 20 before one repeats
    ncol = 1 + len(degradations) // 16  # a long plan's legend in columns beside the panels, which keep their height
    fig, axes = plt.subplots(1, len(embedders), figsize=(4.6 * len(embedders) + 1.6 * ncol, max(3.8, 0.19 * len(degradations) / ncol + 1)),
                             sharey=True, squeeze=False)
    for ax, emb in zip(axes[0], embedders, strict=True):
        for degradation, rows in d[d.embedder == emb].groupby("degradation", sort=False):
            rows, i = rows.sort_values("length_s"), degradations.index(degradation)
            ax.plot(rows.length_s, rows.value, marker="osD^v"[i // 20 % 5], color=colors[i % 20], lw=2.4 if degradation == "clean" else 1.2,
                    label=degradation)
        ax.set_xticks(sorted(set(d.length_s)), [f"{x:g}" for x in sorted(set(d.length_s))])
        ax.set(title=emb, xlabel="query length (s)", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("Recall@1 (exact index)")
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="degradation", ncol=ncol)
    fig.suptitle("Recall@1 against query length, per degradation")
    fig.tight_layout()
    return _png(fig)


def length_table(df: pd.DataFrame) -> pd.DataFrame:
    """Recall@1 (exact index): a row per degradation, a column per embedder x query length."""
    d = _lengths(df)
    table = d.pivot_table(index="degradation", columns=["embedder", "length_s"], values="value", sort=False)
    embedders = list(dict.fromkeys(d.embedder))
    table = table[sorted(table.columns, key=lambda c: (embedders.index(c[0]), c[1]))]
    table.columns = pd.MultiIndex.from_tuples([(e, f"{x:g}s") for e, x in table.columns], names=["embedder", "length"])
    return table


def choice_section(choice: dict) -> list[str]:
    """What the run publishes by merit, why, and every candidate's criterion score."""
    cols = {"rank": "rank", "embedder": "embedder", "index_kind": "index kind", "score": choice["criterion"], "worst_set": "worst set",
            "mean_all": "mean over the length's sets", "e2e_p95_ms": "e2e p95 (ms)", "why_not": "not a candidate because"}
    table = pd.DataFrame(choice["candidates"])[list(cols)].rename(columns=cols).round(4).fillna("")
    return [f"<h2>Published by merit: {html.escape(choice['embedder'])} / {html.escape(choice['index_kind'])}</h2>",
            f"<p>Criterion: {html.escape(choice['criterion'])} (configs/index.yaml <code>publish</code>); ties: {html.escape(choice['tie_break'])}.</p>",
            f"<p><b>Why:</b> {html.escape(choice['reason'])}</p>", table.to_html(index=False, classes="choice")]


def latency_plot(df: pd.DataFrame) -> str:
    """Mean Recall@10 over the query sets against single-query search p50, one point per (embedder, index kind)."""
    rec = df[(df.metric == "recall") & (df.k == 10) & ~df.query_set.str.startswith("latency")].groupby(["embedder", "index_kind"]).value.mean()
    lat = df[df.metric == "latency_search_p50_ms"].groupby(["embedder", "index_kind"]).value.mean()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for (emb, kind), r in rec.items():
        ax.scatter(lat[(emb, kind)], r, s=40)
        ax.annotate(f"{emb}/{kind}", (lat[(emb, kind)], r), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("search p50 (ms, one query)")
    ax.set_ylabel("mean Recall@10")
    ax.set_title("Recall vs search latency per index")
    ax.grid(alpha=0.3)
    return _png(fig)


def catalog_map_section(catalog_map: dict) -> list[str]:
    parts = [f"<h2>Catalog map ({html.escape(catalog_map['embedder'])} track embeddings, VAE latent means)</h2>"]
    if "error" in catalog_map:
        return parts + [f"<p>No map: {html.escape(catalog_map['error'])}</p>"]
    png = Path(catalog_map["files"][0]).read_bytes()
    parts.append(f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    parts.append("<p>Outliers: the tracks the VAE reconstructs worst (the `vae_latents` table and `cloudtune report catalog_outliers` hold all).</p>")
    parts.append(pd.DataFrame(catalog_map["outliers"])[["track_id", "catalog", "source_uri", "recon_error"]].round(4).to_html(index=False))
    return parts


TABLE_METRICS = {"recall": "R@1", "mrr": "MRR", "offset_hit": "offset hit"}  # the rows of metric_table, in order


def metric_table(rows: list[dict], length: str = "5s"):
    """Recall@1 / MRR / offset hits per (embedder, index kind) x degradation for one query length, as a DataFrame."""
    import pandas as pd

    df = pd.DataFrame(rows)
    df = df[df.query_set.str.startswith(f"{length}/")]
    df = df[((df.metric == "recall") & (df.k == 1)) | (df.metric.isin(list(TABLE_METRICS)) & (df.metric != "recall"))]  # R@1 only, not R@5/R@10
    df = df.assign(metric=df.metric.map(TABLE_METRICS), degradation=df.query_set.map(degradation_of))
    return df.pivot_table(index=["embedder", "index_kind", "metric"], columns="degradation", values="value", sort=False)


def write_report(run_id: str, rows: list[dict], skipped: dict[str, str], run_config: dict, catalog_map: dict | None = None,
                 choice: dict | None = None) -> str:
    df = pd.DataFrame(rows)
    lengths = [f"{x:g}s" for x in sorted({length_of(q) for q in df.query_set} - {None}, reverse=True)]
    parts = [f"<h1>Retrieval evaluation of run {html.escape(run_id)}</h1>",
             f"<p>Catalogs {html.escape(', '.join(run_config['catalogs']))}: {run_config['gallery_tracks']} tracks indexed; queries from "
             f"{run_config['query_tracks']} {html.escape(run_config['queries']['split'])}-split tracks, {run_config['queries']['per_track']} clips per "
             f"track and length, each under every degradation, cut from the tracks' source files and brought to the catalog level as "
             f"search does. Ranking is by track."
             + (f" Distractor catalogs (indexed, never queried): {html.escape(', '.join(run_config['distractors']))}." if run_config.get("distractors")
                else "") + "</p>"]
    for name, reason in skipped.items():
        parts.append(f"<p><b>{html.escape(name)} skipped:</b> {html.escape(reason)}</p>")
    if choice:
        parts.extend(choice_section(choice))
    if lengths:
        parts.append("<h2>Recall against query length</h2>")
        parts.append(length_plot(df))
        parts.append(length_table(df).round(3).to_html())
    for length in lengths:
        parts.append(f"<h2>{length} queries</h2>")
        parts.append(recall_plot(df, length))
        parts.append(metric_table(rows, length).round(3).to_html())
    parts.append("<h2>Latency and throughput</h2>")
    parts.append(latency_plot(df))
    lat = df[df.query_set.str.startswith("latency") | (df.metric == "recall_vs_exact")]
    parts.append(lat.pivot_table(index=["embedder", "index_kind"], columns="metric", values="value").round(3).to_html())
    if catalog_map:
        parts.extend(catalog_map_section(catalog_map))
    curve = paths.training_curve(run_id)
    if curve.exists():
        parts.append("<h2>Embedder training</h2>")
        parts.append(f'<img src="data:image/png;base64,{base64.b64encode(curve.read_bytes()).decode()}">')
    body = "\n".join(parts)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>CloudTune evaluation {html.escape(run_id)}</title>"
            "<style>body{font-family:sans-serif;margin:2em;max-width:1200px} table{border-collapse:collapse;font-size:13px} "
            "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}</style></head><body>" + body + "</body></html>")
    path = paths.evaluation_html(run_id)
    write_text(path, page)
    return str(path)
