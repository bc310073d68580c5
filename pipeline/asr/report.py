"""The HTML report of an ASR evaluation: one self-contained file (the plot inlined), written atomically.

Sections: what was run; the corpus figures (overall and per language); the distribution of per-file WER and CER (histogram);
the worst files by their headline metric, hypothesis beside reference; the files that failed with their reasons.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pipeline.asr.evaluation import headline_of
from pipeline.fsutil import write_text
from pipeline.plots import inline_png

STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1200px} table{border-collapse:collapse;margin:1em 0} "
         "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top} th{background:#f4f4f4}")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def error_histogram(rows: Sequence[dict]) -> str:
    """Per-file WER and CER of the scored files as two histograms (bins of 0.05; rates over 1, from insertions, in the last bin)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.4), dpi=100)
    for ax, metric in zip(fig.subplots(1, 2), ("wer", "cer"), strict=True):
        values = [min(r[metric], 1.0) for r in rows if r[metric] is not None]
        ax.hist(values, bins=[i / 20 for i in range(21)], color="tab:blue" if metric == "wer" else "tab:orange", edgecolor="white")
        ax.set(xlabel=f"per-file {metric.upper()} (1 = 100 % or more)", ylabel="files", xlim=(0, 1), title=f"{metric.upper()} of {len(values)} files")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return inline_png(fig, alt="per-file WER and CER histograms")


def _figures_table(summary: dict) -> str:
    languages = {"all files": summary, **summary["by_language"]}
    table = pd.DataFrame([{"files": f["files"], "failed": f["errors"], "reference words": f["ref_words"], "WER": _fmt(f["wer"]), "CER": _fmt(f["cer"]),
                           "headline": f"{f['metric'].upper()} {_fmt(f['value'])}"} for f in languages.values()], index=list(languages))
    return table.to_html()


def write_asr_report(path: str | Path, run_id: str, rows: Sequence[dict], summary: dict, run_config: dict, worst_files: int,
                     cer_languages: Sequence[str]) -> Path:
    """Write the report of one evaluation run to ``path``; ``rows`` are its `asr_results` rows, ``summary`` what
    :func:`pipeline.asr.evaluation.summarize` made of them; ``worst_files`` rows in the worst-files table. Returns ``path``."""
    esc = html.escape
    scored = [r for r in rows if r["error"] is None]
    failed = [r for r in rows if r["error"] is not None]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>ASR evaluation {esc(run_id)}</title><style>{STYLE}</style></head><body>",
             f"<h1>ASR evaluation of run {esc(run_id)}</h1>",
             f"<p>Manifest <code>{esc(str(run_config.get('manifest')))}</code>: {summary['files']} files, {summary['audio_hours'] * 3600:.1f} s of audio. "
             f"Backend {esc(str(run_config.get('backend')))}, model <code>{esc(str(rows[0]['model'] if rows else ''))}</code>. "
             f"Texts normalized <b>{esc(str(run_config.get('normalize')))}</b> before scoring (docs/asr.md). Corpus WER and CER are the "
             f"edits of every transcribed file over their reference length; failed files are counted, not scored.</p>",
             f"<h2>Corpus: {summary['metric'].upper()} {_fmt(summary['value'])}</h2>",
             f"<p>WER {_fmt(summary['wer'])}, CER {_fmt(summary['cer'])}, {summary['errors']} of {summary['files']} files failed, "
             f"mean real-time factor {_fmt(summary['mean_rtf'])}.</p>",
             _figures_table(summary),
             "<h2>Per-file error distribution</h2>", error_histogram(scored) if scored else "<p>No file was transcribed.</p>"]
    worst = sorted(scored, key=lambda r: (-(headline_of(r, cer_languages) or 0.0), r["result_id"]))[:worst_files]
    if worst:
        table = pd.DataFrame([{"file": r["source_uri"], "language": r["language"] or "", "WER": _fmt(r["wer"]), "CER": _fmt(r["cer"]),
                               "reference": r["reference"], "hypothesis": r["text"]} for r in worst])
        parts += [f"<h2>Worst {len(worst)} files (by their headline metric)</h2>", table.to_html(index=False)]
    if failed:
        table = pd.DataFrame([{"file": r["source_uri"], "error": r["error"]} for r in failed])
        parts += [f"<h2>Failed files ({len(failed)})</h2>", table.to_html(index=False)]
    parts.append("</body></html>")
    return write_text(path, "\n".join(parts) + "\n")
