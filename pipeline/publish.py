"""Publishing: the run whose index `cloudtune search` and the nightly DAG use.

``$CLOUDTUNE_HOME/published.json`` names the run, its embedder and index kind. It is replaced
atomically, and only for a run whose evaluation finished (its reports/evaluation.json exists), so a
failed or half-done run never replaces the published one.
"""

from __future__ import annotations

import json

from pipeline import paths
from pipeline.config import PublishSettings
from pipeline.fsutil import write_json
from pipeline.store import db


def publish_run(run_id: str, settings: PublishSettings, embedder: str | None = None, index_kind: str | None = None) -> dict:
    """Publish an evaluated run: ``embedder``/``index_kind`` when given, else those of ``settings`` (configs/index.yaml ``publish``),
    falling back to what the run has. Returns the published record."""
    evaluation = paths.evaluation_json(run_id)
    if not evaluation.exists():
        raise RuntimeError(f"publish: run {run_id} has no finished evaluation ({evaluation} is missing): run `cloudtune evaluate --run-id {run_id}`")
    done = json.loads(evaluation.read_text())
    index_kind_given = index_kind is not None
    index_kind = index_kind or settings.index_kind
    wanted = embedder or settings.embedder
    if wanted not in done["embedders"]:
        if embedder:
            raise RuntimeError(f"publish: embedder {embedder} was not evaluated in run {run_id} (evaluated: {', '.join(done['embedders'])})")
        wanted = done["embedders"][-1]  # the configured one is missing: the last evaluated (learned ones come after mel-stats)
    if not index_kind_given:
        have = [k for k in done["index_kinds"] if paths.index(run_id, wanted, k).manifest.exists()]
        if index_kind not in have and have:
            index_kind = have[0] if len(have) == 1 else [k for k in have if k != "flat"][0]  # an ANN index when the run has one
    if not paths.index(run_id, wanted, index_kind).manifest.exists():
        raise RuntimeError(f"publish: run {run_id} has no {index_kind} index of {wanted}")
    record = {"run_id": run_id, "embedder": wanted, "index_kind": index_kind, "published_at": db.utcnow().isoformat(),
              "evaluation": str(evaluation), "report": done.get("report")}
    previous = published()
    if previous and previous.get("run_id") != run_id:
        record["previous"] = {k: previous[k] for k in ("run_id", "embedder", "index_kind", "published_at") if k in previous}
    write_json(paths.published_json(), record)
    return record


def published() -> dict | None:
    path = paths.published_json()
    return json.loads(path.read_text()) if path.exists() else None
