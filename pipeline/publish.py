"""Publishing: the run whose index `cloudtune search` and the nightly DAG use.

``$CLOUDTUNE_HOME/published.json`` names the run, its embedder and index kind, and why those. It is replaced
atomically, and only for a run whose evaluation finished (its reports/evaluation.json exists), so a failed or
half-done run never replaces the published one. Reading it checks it: a record that is not JSON or lacks a field raises
:class:`PublishedRecordError` naming the file (a ``ValueError``: the CLI prints it as one line). Publishing over such a record
replaces it (the record notes what it replaced).

By merit: unless a caller names them (``cloudtune publish --embedder/--kind``, the nightly DAG's plan), the embedder
and index kind are the evaluation's choice (``evaluation.json`` ``choice``, made by :mod:`pipeline.evaluate.merit`
on configs/index.yaml ``publish``), and the record carries its reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

from pipeline import paths
from pipeline.config import PublishSettings
from pipeline.fsutil import write_json
from pipeline.names import EMBEDDERS, INDEX_KINDS
from pipeline.store import db

REQUIRED = ("run_id", "embedder", "index_kind", "published_at")


class PublishedRecordError(ValueError):
    """published.json cannot be read, or is not a published record; the message names the file and the reason."""


def evaluation_choice(run_id: str) -> dict | None:
    """The run's choice by merit (its evaluation.json ``choice``); None before a finished evaluation, or for one made before
    publishing by merit."""
    path = paths.evaluation_json(run_id)
    return json.loads(path.read_text()).get("choice") if path.exists() else None


def pick(run_id: str, settings: PublishSettings, embedder: str | None = None, index_kind: str | None = None) -> tuple[str, str, str]:
    """(embedder, index kind, reason) of ``run_id`` to serve: those named, the rest from the evaluation's choice (for a
    named embedder or kind, its best-ranked candidate); without a choice, what the run has on disk. Raises when the
    run has no index of what is named."""
    choice = evaluation_choice(run_id)
    named = [f"{what} {value}" for what, value in (("embedder", embedder), ("index kind", index_kind)) if value]
    if choice:
        if not named:
            return choice["embedder"], choice["index_kind"], f"by merit: {choice['reason']}"
        ranked = [c for c in choice["candidates"] if embedder in (None, c["embedder"]) and index_kind in (None, c["index_kind"])
                  and paths.index(run_id, c["embedder"], c["index_kind"]).manifest.exists()]
        if ranked:
            best = ranked[0]
            rest = "" if embedder and index_kind else f"; {best['embedder'] if index_kind else best['index_kind']}: its best-ranked by the criterion"
            score = f"{best['score']:.4f}" if best.get("score") is not None else "no score"
            return best["embedder"], best["index_kind"], (
                f"named by the caller ({', '.join(named)}){rest}: {choice['criterion']} {score}; the evaluation's choice was "
                f"{choice['embedder']}/{choice['index_kind']} ({choice['score']:.4f})")
    evaluated = json.loads(paths.evaluation_json(run_id).read_text())["embedders"] if paths.evaluation_json(run_id).exists() else []
    filled = []
    if embedder is None:  # no choice to follow: the last evaluated embedder (learned ones come after mel-stats) with embeddings
        have = [e for e in evaluated or EMBEDDERS if paths.embeddings(run_id, e).manifest.exists()]
        if not have:
            raise RuntimeError(f"run {run_id}: no embedder with catalog embeddings; name one with --embedder")
        embedder = have[-1]
        filled.append(f"embedder {embedder}: the last {'evaluated' if evaluated else 'embedded'} one")
    if index_kind is None:
        kinds = [k for k in dict.fromkeys([*settings.index_kinds, "flat", *INDEX_KINDS]) if paths.index(run_id, embedder, k).manifest.exists()]
        if not kinds:
            raise RuntimeError(f"run {run_id}: no index of {embedder}")
        index_kind = kinds[0]
        filled.append(f"index kind {index_kind}: the first of publish.index_kinds ({', '.join(settings.index_kinds)}), else flat, the run has")
    head = f"named by the caller ({', '.join(named)})" if named else "the run's evaluation has no choice by merit"
    return embedder, index_kind, "; ".join([head, *filled])


def already_published(run_id: str, settings: PublishSettings, embedder: str | None = None, index_kind: str | None = None) -> dict | None:
    """The published record when it names ``run_id`` already with what publishing it now would pick (embedder, index kind, reason)
    and was published after the run's evaluation finished, else None: publishing again would only move its ``published_at``."""
    evaluation = paths.evaluation_json(run_id)
    try:
        current = published()
    except PublishedRecordError:
        return None
    if not current or current["run_id"] != run_id or not evaluation.exists():
        return None
    try:
        picked = pick(run_id, settings, embedder, index_kind)
    except RuntimeError:
        return None
    if (current["embedder"], current["index_kind"], current.get("reason")) != picked:
        return None
    try:  # an evaluation redone since (the run retrained in place, say) is published again: a new stamp reloads the service
        newer = datetime.fromisoformat(json.loads(evaluation.read_text())["finished_at"]) > datetime.fromisoformat(current["published_at"])
    except (KeyError, TypeError, ValueError):
        return None
    return None if newer else current


def publish_run(run_id: str, settings: PublishSettings, embedder: str | None = None, index_kind: str | None = None,
                check: Callable[[str, str, str], None] | None = None) -> dict:
    """Publish an evaluated run: ``embedder``/``index_kind`` when given, else the evaluation's choice by merit (see
    :func:`pick`; ``settings``, configs/index.yaml ``publish``, orders the index kinds when the evaluation has no choice).
    ``check(run_id, embedder, index_kind)`` runs before published.json is replaced and refuses broken artifacts by raising
    (:func:`pipeline.search.check_run`), so the run published before stays published. Returns the published record, with ``reason``."""
    evaluation = paths.evaluation_json(run_id)
    if not evaluation.exists():
        raise RuntimeError(f"publish: run {run_id} has no finished evaluation ({evaluation} is missing): run `cloudtune evaluate --run-id {run_id}`")
    done = json.loads(evaluation.read_text())
    if embedder and embedder not in done["embedders"]:
        raise RuntimeError(f"publish: embedder {embedder} was not evaluated in run {run_id} (evaluated: {', '.join(done['embedders'])})")
    embedder, index_kind, reason = pick(run_id, settings, embedder, index_kind)
    if not paths.index(run_id, embedder, index_kind).manifest.exists():
        raise RuntimeError(f"publish: run {run_id} has no {index_kind} index of {embedder}")
    if check is not None:
        check(run_id, embedder, index_kind)
    choice = done.get("choice") or {}
    record = {"run_id": run_id, "embedder": embedder, "index_kind": index_kind, "published_at": db.utcnow().isoformat(),
              "evaluation": str(evaluation), "report": done.get("report"), "reason": reason, "criterion": choice.get("criterion")}
    try:
        previous = published()
    except PublishedRecordError as exc:  # publishing a run is how an unreadable record gets repaired
        previous, record["replaced_unreadable"] = None, str(exc)
    if previous and previous.get("run_id") != run_id:
        record["previous"] = {k: previous[k] for k in REQUIRED}
    write_json(paths.published_json(), record)
    return record


def published() -> dict | None:
    """The published record, or None when nothing is published. Raises :class:`PublishedRecordError` for a file that is not
    JSON (truncated, say) or lacks a field of :data:`REQUIRED` or names an unknown embedder or index kind."""
    path = paths.published_json()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        record = json.loads(data)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise PublishedRecordError(f"{path}: not a published record: not JSON ({exc})") from None
    if not isinstance(record, dict):
        raise PublishedRecordError(f"{path}: not a published record: a JSON {type(record).__name__}, not an object")
    missing = [k for k in REQUIRED if not isinstance(record.get(k), str) or not record[k]]
    if missing:
        raise PublishedRecordError(f"{path}: not a published record: no {', '.join(missing)} (expected {', '.join(REQUIRED)})")
    for key, known in (("embedder", EMBEDDERS), ("index_kind", INDEX_KINDS)):
        if record[key] not in known:
            raise PublishedRecordError(f"{path}: not a published record: {key} {record[key]!r} is not one of {', '.join(known)}")
    return record
