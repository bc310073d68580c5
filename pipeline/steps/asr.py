"""The ASR evaluation step (`cloudtune asr eval`, the asr_evaluation DAG): transcribe a manifest's files, score them, store and report.

1. the manifest is read (:mod:`pipeline.asr.manifest`) and every reference checked: a bad manifest fails before a run exists;
2. a `runs` row, kind ``asr_eval``, with the resolved config (configs/asr.yaml merged with ``config_path`` and the environment,
   plus the manifest, backend, model and device asked for);
3. the files transcribed in manifest order (:func:`pipeline.asr.transcribe.transcribe_files`); a file that fails is a row
   with its error, and the step goes on;
4. the `asr_results` rows of the run replaced in one transaction (a re-run of the run id leaves no old rows);
5. ``reports/asr_eval.html`` (:func:`pipeline.paths.asr_report`);
6. the run marked succeeded, or failed when no file could be transcribed (an exception marks it failed too).
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline import config, paths
from pipeline.asr import scoring
from pipeline.asr.evaluation import result_row, summarize, write_results
from pipeline.asr.manifest import ManifestError, read_manifest
from pipeline.asr.report import write_asr_report
from pipeline.store import db

KIND = "asr_eval"


def evaluate_asr(manifest: str | Path, backend: str | None = None, model: str | None = None, device: str | None = None, run_id: str | None = None,
                 config_path: str | Path | None = None, *, url: str | None = None, progress: bool = False) -> dict:
    """Evaluate a recognizer on ``manifest`` (TSV: audio, reference[, language]). ``backend`` (default asr.backend), ``model`` and
    ``device`` override configs/asr.yaml; ``run_id`` names the run (default: a new id; an existing one is re-run and its rows
    replaced); ``url`` the metrics DB (default CLOUDTUNE_DB_URL).

    Returns {"run_id", "status", "files", "errors", "wer", "cer", "metric", "value", "audio_hours", "mean_rtf", "by_language",
    "model", "backend", "report"}; ``wer``/``cer`` are corpus figures (None when no file was transcribed).
    Raises ManifestError (a ValueError) for a bad manifest, before any run is recorded."""
    cfg = config.load_asr(config_path)
    eval_s = cfg.asr_eval
    entries = read_manifest(manifest)
    for e in entries:
        if not scoring.normalize(e.reference, eval_s.normalize):
            raise ManifestError(f"{manifest}:{e.line}: the reference text is empty after normalization ({eval_s.normalize})")
    from pipeline.asr.registry import get_transcriber  # the backends' imports (torch, pocketsphinx) only once the manifest is good
    from pipeline.asr.transcribe import transcribe_files

    backend = backend or cfg.asr.backend
    run_config = {"manifest": str(Path(manifest).resolve()), "files": len(entries), "backend": backend, "model": model, "device": device,
                  "normalize": eval_s.normalize, "config": cfg.raw}
    with db.connect(url) as conn, db.recorded_run(conn, KIND, run_config, run_id) as run:
        transcriber = get_transcriber(backend, cfg, model=model, device=device)
        print(f"asr eval: run {run.run_id}: {len(entries)} files with {transcriber.name} ({transcriber.model_id})", file=sys.stderr)
        started = db.utcnow()
        results = transcribe_files(transcriber, [e.audio for e in entries], cfg.asr, progress=progress)
        rows = [result_row(run.run_id, transcriber.model_id, entry, result, eval_s.normalize, started)
                for entry, result in zip(entries, results, strict=True)]
        write_results(conn, run.run_id, rows)
        conn.commit()
        summary = summarize(rows, eval_s.cer_languages)
        report = write_asr_report(paths.asr_report(run.run_id), run.run_id, rows, summary, run_config, eval_s.worst_files, eval_s.cer_languages)
        figures = f"corpus WER {_fmt(summary['wer'])}, CER {_fmt(summary['cer'])}"
        if summary["errors"] == summary["files"]:
            first = next(r["error"] for r in rows if r["error"])
            run.status, run.message = "failed", f"every one of {summary['files']} files failed (first: {first}); report {report}"
        else:
            run.message = f"{summary['files']} files ({summary['errors']} failed): {figures}; report {report}"
    print(f"asr eval: run {run.run_id}: {run.message}", file=sys.stderr)
    return {"run_id": run.run_id, "status": run.status, **{k: summary[k] for k in ("files", "errors", "wer", "cer", "metric", "value", "audio_hours",
                                                                                   "mean_rtf", "by_language")},
            "model": transcriber.model_id, "backend": backend, "report": str(report)}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def evaluate_asr_from_params(params: dict, run_id: str) -> dict:
    """The Airflow task of dags/asr_evaluation.py: the DAG params (manifest, backend, model, device) -> the step's result (its XCom).

    A relative manifest path is taken under CLOUDTUNE_HOME (a worker's working folder is arbitrary). A bad manifest fails the
    task without retries; a run in which every file failed fails it too (after its rows and report are written)."""
    from airflow.sdk.exceptions import AirflowFailException

    if not (params.get("manifest") or "").strip():
        raise AirflowFailException("asr_evaluation: give the manifest param (a TSV of audio path, reference text, optional language)")
    manifest = Path(params["manifest"].strip())
    manifest = manifest if manifest.is_absolute() else paths.home() / manifest
    try:
        result = evaluate_asr(manifest, backend=params.get("backend"), model=params.get("model") or None, device=params.get("device"), run_id=run_id)
    except ManifestError as exc:
        raise AirflowFailException(str(exc)) from None
    if result["status"] == "failed":
        raise AirflowFailException(f"asr eval: run {run_id}: every file failed; see {result['report']}")
    return result
