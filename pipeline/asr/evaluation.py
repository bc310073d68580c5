"""The rows and figures of an ASR evaluation: one `asr_results` row per manifest entry, their idempotent write, the corpus summary.

In: the manifest's entries (:mod:`pipeline.asr.manifest`) and the recognizer's :class:`~pipeline.asr.base.FileResult` of each,
in the same order. A failed file is a row with ``error`` and no scores; it is counted, never scored (the figures are over the
files that were transcribed). Rows are keyed ``<run_id>:<manifest line>``; writing a run's rows first removes that run's old
rows, so a re-run of a run id replaces them (a shorter manifest leaves none behind).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import Connection, delete

from pipeline.asr import scoring
from pipeline.asr.base import FileResult
from pipeline.asr.manifest import ManifestEntry
from pipeline.store import db
from pipeline.store.tables import asr_results


def result_row(run_id: str, model: str, entry: ManifestEntry, result: FileResult, normalize: str, created_at: datetime) -> dict:
    """The `asr_results` row of one file: the transcript, its timing and its scores against the reference, or the error."""
    row = {"result_id": f"{run_id}:{entry.line}", "run_id": run_id, "track_id": None, "source_uri": str(entry.audio), "model": model,
           "language": entry.language or result.language, "text": result.text, "duration_s": result.duration_s, "seconds": result.seconds,
           "rtf": result.rtf, "reference": entry.reference, "error": result.error, "created_at": created_at,
           "wer": None, "cer": None, "ref_words": None, "word_edits": None, "ref_chars": None, "char_edits": None}
    if result.error is None:
        s = scoring.score(entry.reference, result.text or "", normalize)
        row.update(wer=s.wer, cer=s.cer, ref_words=s.words, word_edits=s.word_edits, ref_chars=s.chars, char_edits=s.char_edits)
    return row


def write_results(conn: Connection, run_id: str, rows: Sequence[dict]) -> int:
    """Replace the run's `asr_results` rows with ``rows`` in the caller's transaction (the caller commits); returns the count."""
    conn.execute(delete(asr_results).where(asr_results.c.run_id == run_id))
    return db.upsert(conn, asr_results, rows)


def _score(row: dict) -> scoring.Score:
    return scoring.Score(row["word_edits"], row["ref_words"], row["char_edits"], row["ref_chars"])


def _figures(rows: Sequence[dict], cer_languages: Iterable[str]) -> dict:
    scored = [r for r in rows if r["error"] is None]
    c = scoring.corpus(_score(r) for r in scored)
    metrics = {scoring.headline_metric(r["language"], cer_languages) for r in scored}
    metric = "cer" if metrics == {"cer"} else "wer"
    return {"files": len(rows), "errors": len(rows) - len(scored), "wer": c.wer, "cer": c.cer, "metric": metric, "value": c.cer if metric == "cer" else c.wer,
            "ref_words": c.words, "ref_chars": c.chars}


def summarize(rows: Sequence[dict], cer_languages: Iterable[str]) -> dict:
    """Corpus figures of the rows: {"files", "errors", "wer", "cer", "metric", "value", "ref_words", "ref_chars", "audio_hours",
    "mean_rtf", "by_language": {language or "unknown": the same first eight}}. ``wer``/``cer`` sum the scored files' edits over
    their reference lengths (None when nothing was scored); ``metric`` is the headline, ``"cer"`` when every scored file's language
    is one of ``cer_languages``, else ``"wer"``, and ``value`` its figure."""
    cer_languages = tuple(cer_languages)
    rtfs = [r["rtf"] for r in rows if r["rtf"] is not None]
    out = _figures(rows, cer_languages)
    out["audio_hours"] = sum(r["duration_s"] or 0.0 for r in rows) / 3600
    out["mean_rtf"] = sum(rtfs) / len(rtfs) if rtfs else None
    by_language: dict[str, list[dict]] = {}
    for r in rows:
        by_language.setdefault(r["language"] or "unknown", []).append(r)
    out["by_language"] = {lang: _figures(group, cer_languages) for lang, group in sorted(by_language.items())}
    return out


def headline_of(row: dict, cer_languages: Iterable[str]) -> float | None:
    """The per-file figure of the row's headline metric (CER for a CER language, else WER); None for a failed file."""
    return row[scoring.headline_metric(row["language"], cer_languages)]
