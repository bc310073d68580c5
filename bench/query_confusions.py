"""Where the wrong answers go: for some query sets of an evaluated run, the tracks that draw the most wrong first answers
(hubs) and how loud the missed clips are against the found ones.

    .venv/bin/python bench/query_confusions.py --run-id bench-w2-unseen --set background0db --set pink-5db [--length 5]
                                               [--embedder fingerprint] [--kind flat] [--top 6]

The clips are the evaluation's own (configs/eval.yaml `queries`, the plan named there or by CLOUDTUNE__QUERIES__PLAN), searched
the way `cloudtune search` does in the index the evaluation built (the run's catalogs and its distractors). Run
bench/evaluate_retrieval.py first (for --unseen, then name run <run-id>-<catalog>). bench/RESULTS.md "Noise against the music around a
positive" shows what it found.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", type=Path, default=ROOT / "var" / "bench" / "tok_home")
    ap.add_argument("--run-id", required=True)
    ap.add_argument("--set", dest="sets", action="append", required=True, help="query set name of the plan, e.g. pink-5db (repeatable)")
    ap.add_argument("--length", type=float, default=5.0, help="query length in seconds (one of the plan's)")
    ap.add_argument("--embedder", default="fingerprint")
    ap.add_argument("--kind", default="flat")
    ap.add_argument("--top", type=int, default=6, help="hubs listed per set")
    args = ap.parse_args()
    os.environ["CLOUDTUNE_HOME"] = str(args.home)

    from sqlalchemy import select

    from pipeline import config
    from pipeline.audio.io import rms_dbfs
    from pipeline.evaluate import metrics as M
    from pipeline.evaluate.queries import clean_clips, query_plan
    from pipeline.evaluate.retrieval import as_queries
    from pipeline.search import Searcher
    from pipeline.steps.evaluation import gallery_and_queries, query_settings
    from pipeline.steps.retrieval import embedder_settings
    from pipeline.store import db
    from pipeline.store.tables import tracks

    qs, background, level = query_settings()
    searcher = Searcher(config.load_index(), run_id=args.run_id, embedder=args.embedder, index_kind=args.kind,
                        embedder_settings=embedder_settings(), audio=config.load_pipeline().audio)
    sr = searcher.sample_rate
    _, _, query_tracks = gallery_and_queries(args.run_id, None, [], qs.split)
    with db.connect() as conn:  # every track of the index: the run's catalogs and the distractors it was evaluated with
        catalog_of = dict(conn.execute(select(tracks.c.track_id, tracks.c.catalog).where(tracks.c.track_id.in_(list(searcher.index.track_ids)))).all())
    plan = query_plan(qs, background, sr)
    unknown = [s for s in args.sets if s not in plan.sets]
    if unknown:
        sys.exit(f"bench: --set {unknown[0]}: not a set of plan {qs.plan} ({', '.join(plan.sets)})")
    clips = clean_clips(query_tracks, [args.length], qs, sr)[args.length]
    level_of = np.array([rms_dbfs(c.wave) for c in clips])  # the clean clips' levels: the same for every set
    print(f"run {args.run_id}, {args.embedder}/{args.kind}: {len(clips)} clips of {args.length:g} s from {len(query_tracks)} tracks, "
          f"searched among the {len(searcher.index.track_ids)} tracks of its index")
    for name in args.sets:
        waves = as_queries(clips, name, plan, qs.seed, sr, level)
        results = searcher.search(waves, 10)
        ranks = M.ranks([[r["track_id"] for r in res] for res in results], [c.track_id for c in clips])
        hubs = Counter(res[0]["track_id"] for c, res in zip(clips, results, strict=True) if res and res[0]["track_id"] != c.track_id)
        missed = ranks != 1
        print(f"\n{args.length:g}s/{name}: R@1 {M.recall_at(ranks, 1):.3f}, R@10 {M.recall_at(ranks, 10):.3f}; "
              f"{int(missed.sum())} missed, median clean level {np.median(level_of[missed]) if missed.any() else float('nan'):.1f} dBFS "
              f"(found: {np.median(level_of[~missed]) if (~missed).any() else float('nan'):.1f})")
        for track_id, count in hubs.most_common(args.top):
            print(f"  {count:4d} wrong first answers -> {catalog_of.get(track_id, '?')}/{track_id} {searcher.source_uri.get(track_id) or ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
