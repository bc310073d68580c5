"""Contrastive embedder training on the bench music: per-epoch loss, val Recall@1, clips/s and total time.

    .venv/bin/python bench/train_embedder.py [--epochs N] [--device cpu|cuda] [--workers N]

Needs the tokenized bench catalog of bench/tokenize_rvq.py (var/bench/tok_home); tokenizes it first
when its current codec has no tokens yet. Trains with configs/train.yaml (track-level splits).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=ROOT / "var" / "bench" / "tok_home")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, help="DataLoader workers (config training.num_workers)")
    ap.add_argument("--run-id", default=None)
    args = ap.parse_args()
    os.environ["CLOUDTUNE_HOME"] = str(args.home)
    os.environ.pop("CLOUDTUNE_DB_URL", None)
    if args.workers is not None:
        os.environ["CLOUDTUNE__TRAINING__NUM_WORKERS"] = str(args.workers)

    from pipeline import paths
    from pipeline.steps.tokens import tokenize
    from pipeline.steps.training import train_token_embedder as train_embedder
    from pipeline.tokenize.catalog import current_rvq

    codec = current_rvq("bench")
    if codec is None:
        sys.exit(f"bench: no tokenized bench catalog in {args.home}: run bench/tokenize_rvq.py first")
    tokens = paths.tokens_dir("bench", codec.name)
    if not tokens.is_dir():
        print(tokenize("rvq", "bench").line())
    started = time.perf_counter()
    summary = train_embedder(tokens, run_id=args.run_id, device=args.device, epochs=args.epochs)
    wall = time.perf_counter() - started
    for h in summary["history"]:
        print(f"epoch {h['epoch']:2d}  loss {h['train_loss']:.4f}  val R@1 {h['val_recall_at_1']:.3f}  {h['seconds']:.1f} s  {h['clips_per_s']:.0f} clips/s")
    hist = summary["history"]
    print(f"RESULT train embedder ({summary['device']}): {len(hist)} epochs on {summary['train_tracks']} train / {summary['val_tracks']} val tracks "
          f"in {wall / 60:.1f} min; loss {hist[0]['train_loss']:.3f} -> {hist[-1]['train_loss']:.3f}, val R@1 {hist[0]['val_recall_at_1']:.3f} -> "
          f"{hist[-1]['val_recall_at_1']:.3f}; {sum(h['clips_per_s'] for h in hist) / len(hist):.0f} clips/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
