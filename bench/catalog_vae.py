"""The catalog VAE on generated track embeddings: training time, and how many planted outliers it ranks on top.

    .venv/bin/python bench/catalog_vae.py [--tracks 5000] [--dim 256] [--catalogs 8] [--planted 20] [--epochs N]

Each catalog is a Gaussian blob around a random direction (spread --noise); the planted outliers are random
directions; rows are L2-normalized like real embeddings. Runs train_catalog_vae with configs/pipeline.yaml's
catalog_vae settings into a temporary CLOUDTUNE_HOME (SQLite) and prints the time and the share of the
planted outliers among the top --planted tracks by reconstruction error.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--catalogs", type=int, default=8)
    ap.add_argument("--planted", type=int, default=20)
    ap.add_argument("--noise", type=float, default=0.5, help="blob spread (norm of the noise added to a unit center)")
    ap.add_argument("--epochs", type=int, help="config catalog_vae.epochs")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    home = tempfile.mkdtemp(prefix="cloudtune-bench-catalog-vae-")
    os.environ["CLOUDTUNE_HOME"] = home
    os.environ.pop("CLOUDTUNE_DB_URL", None)
    from pipeline import config
    from pipeline.config import CatalogVAESettings
    from pipeline.store import db
    from pipeline.train.catalog_vae import train_catalog_vae

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(args.catalogs, args.dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    n = args.tracks - args.planted
    labels = rng.integers(0, args.catalogs, size=n)
    x = np.concatenate([centers[labels] + args.noise * rng.normal(size=(n, args.dim)) / np.sqrt(args.dim), rng.normal(size=(args.planted, args.dim))])
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    ids = [f"t{i:06d}" for i in range(n)] + [f"planted{i:03d}" for i in range(args.planted)]
    cats = [f"catalog{k}" for k in labels] + [f"catalog{i % args.catalogs}" for i in range(args.planted)]

    s = config.section(CatalogVAESettings, config.load(), "catalog_vae", epochs=args.epochs)
    s = dataclasses.replace(s, top_outliers=args.planted)
    with db.connect() as conn:
        run_id = db.start_run(conn, "bench", {})
    t = time.perf_counter()
    summary = train_catalog_vae(x, ids, cats, run_id, f"{home}/out", s, device=args.device)
    seconds = time.perf_counter() - t
    found = sum(o["track_id"].startswith("planted") for o in summary["outliers"])
    print(f"bench: catalog VAE on {args.tracks} tracks x {args.dim} ({args.catalogs} catalogs, {args.planted} planted outliers), {s.epochs} epochs, "
          f"hidden {s.hidden}, batch {s.batch_size}, {summary['device']}, {s.threads} thread(s)")
    print(f"total {seconds:.1f} s (training {summary['train_seconds']:.1f} s, {summary['train_seconds'] / s.epochs * 1000:.0f} ms/epoch), "
          f"final loss {summary['final_loss']:.2f}; planted outliers in the top {args.planted}: {found}/{args.planted}")
    print(f"map: {home}/out/catalog_map.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
