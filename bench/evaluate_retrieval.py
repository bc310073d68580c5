"""Retrieval quality of the bench run: mel-stats vs the contrastive embedder on every degraded query set.

    .venv/bin/python bench/evaluate_retrieval.py [--run-id bench-r1] [--device cpu] [--distractors distractors]

Needs bench/train_embedder.py first (it trains run bench-r1 in var/bench/tok_home) and, for --distractors,
bench/fetch_distractors.py (catalog `distractors` in the same home). Runs the same `evaluate` as
`cloudtune evaluate` (catalog embedding and index builds included when missing), then prints the gallery,
the seconds per stage, the Recall@1 / MRR tables per query length, latency and the goals: the
contrastive embedder beats mel-stats on every degraded set; 5 s clips reach Recall@1 >= 0.95 and
MRR >= 0.97 under every degradation.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=ROOT / "var" / "bench" / "tok_home")
    ap.add_argument("--run-id", default="bench-r1")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--distractors", action="append", metavar="CATALOG", help="catalog indexed beside the run's, never queried (repeatable)")
    args = ap.parse_args()
    os.environ["CLOUDTUNE_HOME"] = str(args.home)
    os.environ.pop("CLOUDTUNE_DB_URL", None)
    from pipeline import paths

    if not paths.embedder_checkpoint(args.run_id).exists():
        sys.exit(f"bench: no trained run {args.run_id} in {args.home}: run bench/train_embedder.py --run-id {args.run_id} first")

    from pipeline.evaluate.report import metric_table
    from pipeline.evaluate.sets import length_of
    from pipeline.steps.evaluation import evaluate

    started = time.perf_counter()
    result = evaluate(args.run_id, device=args.device, distractors=args.distractors or [])
    wall = time.perf_counter() - started
    pd.set_option("display.width", 250)
    df = pd.DataFrame(result["rows"])
    gallery = df[(df.query_set == "all") & df.metric.str.startswith("gallery_") & (df.index_kind == "flat")]
    print(gallery.pivot_table(index="embedder", columns="metric", values="value").round(2).to_string())
    print("seconds per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in result["seconds"].items()))
    lengths = [f"{x:g}s" for x in sorted({length_of(q) for q in df.query_set} - {None})]
    for length in lengths:
        table = metric_table(result["rows"], length)
        print(f"\n{length} queries (Recall@1 and MRR per degradation):")
        print(table.round(3).to_string())
    lat = df[df.query_set.str.startswith("latency") | (df.metric == "recall_vs_exact")]
    print("\nlatency (ms), QPS and ANN Recall@10 vs exact:")
    print(lat.pivot_table(index=["embedder", "index_kind"], columns="metric", values="value").round(3).to_string())

    flat = df[(df.index_kind == "flat") & df.query_set.map(length_of).notna()]
    r1 = flat[(flat.metric == "recall") & (flat.k == 1)].pivot_table(index="query_set", columns="embedder", values="value")
    mrr = flat[flat.metric == "mrr"].pivot_table(index="query_set", columns="embedder", values="value")
    if "contrastive" in r1:
        beats = (r1["contrastive"] > r1["mel-stats"]) | ((r1["contrastive"] == 1) & (r1["mel-stats"] == 1))
        five = [q for q in r1.index if q.startswith("5s/")]
        goal = [(q, r1.loc[q, "contrastive"], mrr.loc[q, "contrastive"]) for q in five]
        met = [q for q, r, m in goal if r >= 0.95 and m >= 0.97]
        print(f"\nRESULT contrastive beats mel-stats (Recall@1, exact index) on {int(beats.sum())}/{len(beats)} query sets"
              f"{'' if beats.all() else ' (not on ' + ', '.join(beats.index[~beats]) + ')'}")
        print(f"RESULT 5 s goal (R@1 >= 0.95 and MRR >= 0.97) met on {len(met)}/{len(five)} degradations; "
              f"contrastive 5 s R@1 min {min(r for _, r, _ in goal):.3f} mean {sum(r for _, r, _ in goal) / len(goal):.3f}, "
              f"MRR min {min(m for *_, m in goal):.3f}")
    print(f"RESULT evaluate wall {wall / 60:.1f} min; report {result['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
