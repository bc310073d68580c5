"""Fingerprint model training on the bench music: per-epoch loss, val Recall@1, pairs/s and the total time (goal: 15 min on 2 cores).

    .venv/bin/python bench/train_fingerprint.py [--run-id bench-r1] [--epochs N] [--device cpu|cuda] [--config PATH]
                                                [--train-catalog trainmusic] [--resume]

Needs the bench run's track-level splits (bench/train_embedder.py writes them in var/bench/tok_home; the fingerprint trains on
the same train tracks as the token embedder and never reads the token files) and, for real background sound in the
augmentation, bench/fetch_background.py's train pool (var/background/train). Trains with configs/fingerprint.yaml.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=ROOT / "var" / "bench" / "tok_home")
    ap.add_argument("--run-id", default="bench-r1")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--config", type=Path, help="a partial configs/fingerprint.yaml merged over it")
    ap.add_argument("--train-catalog", action="append", metavar="NAME",
                    help="train on this catalog's tracks too (bench/fetch_distractors.py --catalog trainmusic; repeatable)")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    os.environ["CLOUDTUNE_HOME"] = str(args.home)
    os.environ.pop("CLOUDTUNE_DB_URL", None)
    from pipeline import paths
    from pipeline.steps.training import train_fingerprint_model

    if not paths.split_list(paths.splits_dir(args.run_id), "train").exists():
        sys.exit(f"bench: run {args.run_id} in {args.home} has no splits: run bench/train_embedder.py --run-id {args.run_id} first")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    started = time.perf_counter()
    summary = train_fingerprint_model(run_id=args.run_id, config_path=args.config, device=args.device, epochs=args.epochs,
                                      train_catalogs=args.train_catalog, resume=args.resume)
    wall = time.perf_counter() - started
    for h in summary["history"]:
        print(f"epoch {h['epoch']}: loss {h['train_loss']:.4f} val R@1 {h['val_recall_at_1']:.3f} {h['seconds']:.0f} s ({h['pairs_per_s']:.0f} pairs/s)")
    load = os.getloadavg()[0]
    print(f"RESULT fingerprint training ({summary['device']}): {summary['train_tracks']} train tracks, {summary['train_hours']:.2f} h, "
          f"{len(summary['history'])} epochs in {wall / 60:.1f} min wall (load {load:.1f}), final val R@1 "
          f"{summary['history'][-1]['val_recall_at_1']:.3f}; commit {commit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
