"""The steps of the ``nightly_reindex`` DAG: re-index from the published run and fail on a Recall@K regression.

The other nightly tasks reuse the steps of :mod:`pipeline.steps.retrieval`.
"""

from __future__ import annotations

import shutil
import sys

from pipeline import paths
from pipeline.fsutil import atomic_path, write_json
from pipeline.steps.bookkeeping import finish


class RegressionError(RuntimeError):
    """The nightly re-evaluation lost more Recall@K than the configured threshold."""



def nightly_prepare(run_id: str) -> dict:
    """Start a nightly run from the published one: its splits (the same query tracks every night) and its embedder's checkpoint.

    The published run is checked first (:func:`pipeline.search.check_published`): an unreadable published.json, a truncated index
    file or a checkpoint that does not load stops the night here with a ValueError naming the file, before anything is copied;
    nothing is published, so the published run stays as it is."""
    from pipeline.embed.catalog import run_catalogs
    from pipeline.search import check_published

    base = check_published()
    if not base:
        raise RuntimeError(f"nightly: nothing is published in {paths.home()} (trigger audio_retrieval first)")
    src, dst = base["run_id"], run_id
    if src != dst:
        shutil.copytree(paths.splits_dir(src), paths.splits_dir(dst), dirs_exist_ok=True)
        for checkpoint_of in (paths.embedder_checkpoint, paths.fingerprint_checkpoint):  # the learned embedders' weights
            checkpoint = checkpoint_of(src)
            if checkpoint.exists():
                with atomic_path(checkpoint_of(dst)) as tmp:
                    shutil.copyfile(checkpoint, tmp)
    plan = {"base_run_id": base["run_id"], "embedder": base["embedder"], "index_kind": base["index_kind"], "catalogs": run_catalogs(run_id)}
    write_json(paths.nightly_plan(dst), plan)
    return plan


def regressions(k: int, max_drop: float):
    """sql/reports/regressions.sql: every nightly run against the succeeded nightly before it."""
    from pipeline.store import reports

    return reports.run_report("regressions", {"k": int(k), "max_drop": float(max_drop)})


def check_regression(run_id: str, k: int, max_drop: float) -> dict:
    """Compare the run's mean Recall@K with the previous succeeded nightly's; a drop over ``max_drop`` raises RegressionError."""
    table = regressions(k, max_drop)
    mine = table[table.run_id == run_id]
    if mine.empty:
        print(f"nightly: run {run_id} has no earlier succeeded nightly to compare with: nothing to check", file=sys.stderr)
        return {"run_id": run_id, "compared_with": None, "regression": False}
    for row in mine.itertuples():
        print(f"nightly: {row.embedder}/{row.index_kind} Recall@{k} {row.previous_recall:.4f} ({row.previous_run_id}) -> {row.recall:.4f}: "
              f"drop {row.recall_drop:+.4f} (threshold {max_drop:g})", file=sys.stderr)
    worst = mine.sort_values("recall_drop").iloc[-1]
    if bool(worst.regression):
        message = (f"Recall@{k} regression: {worst.embedder}/{worst.index_kind} {worst.previous_recall:.4f} ({worst.previous_run_id}) -> "
                   f"{worst.recall:.4f}, drop {worst.recall_drop:.4f} > {max_drop:g} (sql/reports/regressions.sql)")
        finish(run_id, "failed", message)
        raise RegressionError(message)
    return {"run_id": run_id, "compared_with": worst.previous_run_id, "regression": False, "recall_drop": float(worst.recall_drop)}
