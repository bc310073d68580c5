"""Ingest throughput on real music from Debian packages; prints hours, wall time and x realtime.

    .venv/bin/python bench/ingest.py [--workers 2] [--plant-bad] [--db-url postgresql://...]

Fetches fretsonfire-songs-sectoid, fretsonfire-songs-muldjord and drascula-music with
`apt-get download` into var/bench/debs (run `apt-get update` first on a fresh machine) and unpacks
them into var/bench/music. Each run ingests into a fresh CLOUDTUNE_HOME (var/bench/home), then runs
again to show that a re-run adds nothing. With --plant-bad, one file per failure kind is mixed into
the music folder and the counts are checked: one track per good file, one error row per bad file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fretsonfire-songs-sectoid", "fretsonfire-songs-muldjord", "drascula-music")


def fetch_debs(bench_dir: Path, packages: tuple[str, ...], into: Path) -> Path:
    """Unpack Debian ``packages`` into ``into/<package>/``, fetching them with `apt-get download` into
    ``bench_dir/debs`` when missing there. Only the packages named are unpacked, whatever else that folder holds."""
    debs = bench_dir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not list(debs.glob(f"{p}_*.deb"))]
    if missing:
        print(f"fetching {' '.join(missing)} with apt-get download ...", file=sys.stderr)
        if subprocess.run(["apt-get", "download", *missing], cwd=debs).returncode != 0:
            sys.exit(f"bench: apt-get download {' '.join(missing)} failed (run `apt-get update` first)")
    for package in packages:
        target = into / package
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(sorted(debs.glob(f"{package}_*.deb"))[-1]), str(target)], check=True)
    return into


def fetch_music(bench_dir: Path) -> Path:
    music = bench_dir / "music"
    if music.is_dir() and any(music.rglob("*.ogg")):
        return music
    return fetch_debs(bench_dir, PACKAGES, music)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench-dir", type=Path, default=ROOT / "var" / "bench")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--db-url", help="metrics DB (default: a fresh SQLite file in the bench home)")
    ap.add_argument("--plant-bad", action="store_true", help="mix one bad file per failure kind into the folder and check the counts")
    args = ap.parse_args()

    music = fetch_music(args.bench_dir)
    home = args.bench_dir / "home"
    shutil.rmtree(home, ignore_errors=True)
    os.environ["CLOUDTUNE_HOME"] = str(home)
    if args.db_url:
        os.environ["CLOUDTUNE_DB_URL"] = args.db_url
    sources = [music]
    expected_bad: dict[str, str] = {}
    if args.plant_bad:
        from pipeline.audio.fixtures import write_bad_files

        bad_dir = args.bench_dir / "planted_bad"
        shutil.rmtree(bad_dir, ignore_errors=True)
        # a short maximum keeps the planted too-long file small; no bench track is that long
        os.environ["CLOUDTUNE__INGEST__MAX_SECONDS"] = "900"
        expected_bad = write_bad_files(bad_dir, max_seconds=900)
        sources.append(bad_dir)

    from pipeline import config
    from pipeline.config import IngestSettings
    from pipeline.ingest import find_audio_files
    from pipeline.steps.ingest import ingest
    from pipeline.store import db

    files = find_audio_files(sources, config.section(IngestSettings, config.load(), "ingest").extensions)
    total_bytes = sum(f.stat().st_size for f in files)
    print(f"bench: {len(files)} files, {total_bytes / 1e6:.0f} MB, workers={args.workers}, db={db.normalize_url(config.db_url()).split('?')[0]}")

    first = ingest(sources, catalog="bench", workers=args.workers)
    print(first.line())
    second = ingest(sources, catalog="bench", workers=args.workers)
    print(second.line())
    hours = first.audio_seconds / 3600
    print(f"RESULT ingest: {hours:.2f} h of audio, {first.wall_seconds:.1f} s wall, {first.realtime_factor:.0f}x realtime "
          f"with {args.workers} workers; re-run {second.wall_seconds:.2f} s, {second.added} added")

    ok = first.added > 0 and second.added == 0 and second.errors == 0 and second.duplicates == 0
    if not args.plant_bad:
        ok &= first.errors == 0
    else:
        good = len(files) - len(expected_bad)
        # duplicates are good files whose audio is already a track: they map to one track each
        ok &= first.added + first.duplicates == good and first.errors == len(expected_bad)
        from sqlalchemy import func, select

        from pipeline.store.tables import ingest_errors, tracks

        with db.get_engine().connect() as conn:
            n_tracks = conn.execute(select(func.count()).select_from(tracks)).scalar()
            n_errors = conn.execute(select(func.count()).select_from(ingest_errors)).scalar()
            kinds = dict(conn.execute(select(ingest_errors.c.error_kind, func.count()).group_by(ingest_errors.c.error_kind)).all())
        want_kinds: dict[str, int] = {}
        for kind in expected_bad.values():
            want_kinds[kind] = want_kinds.get(kind, 0) + 1
        ok &= n_errors == len(expected_bad) and kinds == want_kinds
        print(f"RESULT planted: {good} good files -> {n_tracks} tracks ({first.duplicates} duplicate content), "
              f"{len(expected_bad)} bad files -> {n_errors} error rows {kinds}; after re-run still {n_tracks} tracks, {n_errors} errors")
    print("bench: OK" if ok else "bench: FAILED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
