"""Real music from Debian's game soundtracks for the bench home: a distractor catalog (indexed, never queried), a catalog of
training music (only ever trained on) or one of unseen music (queried, never trained on), from lists of packages that share none.

    .venv/bin/python bench/fetch_distractors.py [--catalog distractors|trainmusic|unseen] [--home var/bench/tok_home] [--bench-dir DIR]
                                                [--min-hours H] [--workers 2] [--list]

Fetches the packages (`apt-get download` into BENCH_DIR/debs, as bench/ingest.py does; run `apt-get update` first on a fresh
machine), unpacks each into BENCH_DIR/<catalog>/src/<package>/, keeps only its music files and ingests them into that catalog
of CLOUDTUNE_HOME=--home (default var/bench/tok_home, the home of bench/tokenize_rvq.py, train_embedder.py and
evaluate_retrieval.py; BENCH_DIR defaults to the folder above it). `distractors` takes DISTRACTORS, `trainmusic` TRAIN_MUSIC and
`unseen` UNSEEN, each in order until their music adds up to --min-hours (10 h of distractors; every package of the others by
default). A file is music when a folder on its path is a music folder (music/, bgm/, ...) and it lasts at least 30 s, or when it
lasts at least 60 s and no folder on its path is a sound-effects folder (sounds/, sfx/, voices/, ...). No package of the bench
query set (bench/ingest.py PACKAGES: fretsonfire-songs-*, drascula-music) is ever used, and no package has two roles: a model
never trains on a distractor or a query.
bench/train_fingerprint.py --train-catalog trainmusic trains on the `trainmusic` tracks too; bench/evaluate_retrieval.py
--unseen unseen queries the `unseen` ones.

Prints per package the music files, hours and licence (from the package's usr/share/doc/<package>/copyright, whose
licence names are checked), then the catalog's tracks, hours and 5 s segments (the vectors it adds to an evaluation's
gallery), and writes BENCH_DIR/<catalog>/manifest.csv (package, file, seconds, licence, track_id). A re-run unpacks
and ingests nothing new. --list stops before the ingest.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import os
import re
import shutil
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUSIC_DIRS = {"music", "musics", "bgm", "soundtrack", "soundtracks"}
EFFECT_DIRS = {"sound", "sounds", "sfx", "soundfx", "effects", "voices", "voice", "speech", "ambient", "ambience", "announcer"}
MUSIC_MIN_S = 30.0  # a file in a music folder: shorter ones are jingles and stingers
OTHER_MIN_S = 60.0  # a file anywhere else (never in a sound-effects folder)
AUDIO_EXTS = {".ogg", ".oga", ".opus", ".flac", ".mp3", ".wav"}  # .opus is Ogg Opus: named explicitly, ingest decodes it


@dataclass(frozen=True)
class Package:
    name: str
    licence: str  # the licence of its music, as its usr/share/doc/<name>/copyright (and files it points to) says
    check: tuple[str, ...]  # licence names that copyright file must name
    per_file: bool = False  # its copyright file gives music files their own licences (Files: stanzas, DEP-5)


# In order; checked against each package's copyright file by hand, and `check` again on every run.
DISTRACTORS = (
    Package("warzone2100-music", "GPL-2+ (Aftermath and Legacy albums, but track3_enhanced, also CC-BY-SA-3.0+: their license.txt)", ("GPL-2+",)),
    Package("hedgewars-data", "GPL-2", ("GPL-2",)),
    # neverball-data holds no audio in Debian 12: the game's music (bgm/) is in neverball-common
    Package("neverball-common", "GPL-2+", ("GPL-2+",)),
    Package("supertux-data", "GPL-2+ (data/music/*)", ("data/music/*", "GPL-2+")),
    Package("wesnoth-1.16-music", "GPL-2+", ("GNU General Public License version 2", "any later version")),
    Package("naev-data", "per file: GPL-2+, GPL-3 or CC-BY-3.0, CC-BY-SA-3.0, CC-BY-3.0, GPL-3+", ("GPL-3 or CC-BY-3.0", "CC-BY-SA-3.0"),
            per_file=True),
    Package("marsshooter-data", "CC-BY-SA-3.0 (data/audio/music/*, menu.ogg, tutorial.ogg)", ("data/audio/music/*", "CC-BY-SA-3.0")),
    Package("freedroidrpg-data", "GPL-2+", ("GPL-2+",)),
)
TRAIN_MUSIC = (
    Package("widelands-data", "per file: GPL-2+, CC-BY-SA-3.0 (data/music/ingame_24-26)", ("data/music/ingame_24.ogg", "CC-BY-SA-3.0"),
            per_file=True),
    Package("supertuxkart-data", "per file: CC-BY-SA-3.0, CC-BY-SA-4.0, GPL, ... (data/music/*)", ("data/music/bay.ogg", "CC-BY-SA-3.0"),
            per_file=True),
    Package("frozen-bubble-data", "GPL-2", ("GPL-2",)),
    Package("extremetuxracer-data", "GPL-2+", ("GPL-2+",)),
    Package("lincity-ng-data", "GPL-2+", ("GPL-2+",)),
)
UNSEEN = (  # orchestral fantasy scores: queries of a kind no model here trained on (bench/evaluate_retrieval.py --unseen unseen)
    Package("flare-game", "CC-BY-SA-3.0+", ("CC-BY-SA-3.0+",)),
)
ROLES = {"distractors": (DISTRACTORS, 10.0), "trainmusic": (TRAIN_MUSIC, 0.0), "unseen": (UNSEEN, 0.0)}  # catalog -> (packages,
# default --min-hours; 0: all)
_names = [p.name for packages, _ in ROLES.values() for p in packages]
assert len(_names) == len(set(_names)), "a package has two roles"


@dataclass
class MusicFile:
    package: str
    path: Path
    seconds: float
    licence: str


def query_packages() -> tuple[str, ...]:
    from ingest import PACKAGES as QUERY  # bench/ingest.py (this folder is on sys.path)

    return QUERY


def is_query_package(name: str, query: tuple[str, ...]) -> bool:
    return name in query or name.startswith("fretsonfire-songs-") or name == "drascula-music"


def unpack(bench_dir: Path, catalog: str, package: str) -> Path:
    """BENCH_DIR/<catalog>/src/<package>/, fetched and unpacked once (a marker names the .deb it came from)."""
    from ingest import fetch_debs  # bench/ingest.py

    src = bench_dir / catalog / "src"
    target = src / package
    marker = target / ".unpacked"
    debs = sorted((bench_dir / "debs").glob(f"{package}_*.deb"))
    if marker.is_file() and (not debs or marker.read_text().strip() == debs[-1].name):
        return target
    shutil.rmtree(target, ignore_errors=True)
    fetch_debs(bench_dir, (package,), src)
    marker.write_text(sorted((bench_dir / "debs").glob(f"{package}_*.deb"))[-1].name + "\n")
    return target


def copyright_text(target: Path, package: str) -> str:
    path = target / "usr" / "share" / "doc" / package / "copyright"
    if not path.is_file():
        sys.exit(f"bench: {package}: no {path.relative_to(target)}")
    return path.read_text(errors="replace")


def dep5_rules(text: str) -> list[tuple[list[str], str]]:
    """(Files patterns, License name) of each stanza of a machine-readable copyright file, in order."""
    rules = []
    for stanza in re.split(r"\n[ \t]*\n", text):
        files = re.search(r"^Files:(.*?)(?=^\S[^:\n]*:|\Z)", stanza, re.S | re.M)
        lic = re.search(r"^License:[ \t]*(.+)$", stanza, re.M)
        if files and lic:
            rules.append(([p[2:] if p.startswith("./") else p for p in files.group(1).split()], lic.group(1).strip()))
    return rules


def file_licence(rules: list[tuple[list[str], str]], rel: Path) -> str | None:
    """The licence of the last stanza whose pattern matches the end of ``rel`` (DEP-5: the last match wins); `Files: *`
    counts only when no other stanza matches."""
    tails = ["/".join(rel.parts[i:]) for i in range(len(rel.parts))]
    found, fallback = None, None
    for patterns, licence in rules:
        for p in patterns:
            if p == "*":
                fallback = licence
            elif any(fnmatch.fnmatchcase(t, p) for t in tails):
                found = licence
    return found or fallback


def is_music(rel: Path, seconds: float) -> bool:
    folders = {part.lower() for part in rel.parts[:-1]}
    if folders & MUSIC_DIRS or any(f.endswith("_soundtrack") for f in folders):
        return seconds >= MUSIC_MIN_S
    return seconds >= OTHER_MIN_S and not folders & EFFECT_DIRS


def music_files(pkg: Package, target: Path) -> tuple[list[MusicFile], int]:
    """The package's music files (sorted) and the number of other audio files left out."""
    import soundfile as sf

    text = copyright_text(target, pkg.name)
    missing = [name for name in pkg.check if name not in text]
    if missing:
        sys.exit(f"bench: {pkg.name}: its copyright file does not name {', '.join(missing)}: check its licence again")
    rules = dep5_rules(text) if pkg.per_file else []
    out, left_out = [], 0
    for path in sorted(p for p in target.rglob("*") if p.suffix.lower() in AUDIO_EXTS and p.is_file()):
        rel = path.relative_to(target)
        try:
            info = sf.info(str(path))
            seconds = info.frames / info.samplerate
        except (RuntimeError, sf.LibsndfileError):
            seconds = 0.0
        if not is_music(rel, seconds):
            left_out += 1
            continue
        licence = (file_licence(rules, rel) if rules else None) or pkg.licence
        out.append(MusicFile(pkg.name, path, seconds, licence))
    return out, left_out


def vectors(durations: list[float]) -> int:
    """5 s segments (configs/index.yaml `segments`) of tracks of these lengths: the vectors they add to a gallery."""
    from pipeline import config
    from pipeline.config import AudioSettings, SegmentSettings
    from pipeline.embed.segments import segment_starts

    sr = config.section(AudioSettings, config.load(), "audio").sample_rate
    seg = config.section(SegmentSettings, config.load("index"), "segments")
    return sum(len(segment_starts(round(d * sr), sr, seg)) for d in durations)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalog", choices=sorted(ROLES), default="distractors", help="what the music is for (default: distractors)")
    ap.add_argument("--home", type=Path, default=ROOT / "var" / "bench" / "tok_home", help="CLOUDTUNE_HOME to ingest into")
    ap.add_argument("--bench-dir", type=Path, help="where debs/ and <catalog>/ go (default: the folder above --home)")
    ap.add_argument("--min-hours", type=float, help="take packages until their music adds up to this (default: 10 for distractors; 0, all, for others)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--list", action="store_true", help="fetch, unpack and list the music; ingest nothing")
    args = ap.parse_args()
    home = args.home.resolve()
    bench_dir = (args.bench_dir or home.parent).resolve()
    os.environ["CLOUDTUNE_HOME"] = str(home)
    os.environ.pop("CLOUDTUNE_DB_URL", None)

    catalog_name = args.catalog
    packages, min_hours = ROLES[catalog_name]
    args.min_hours = min_hours if args.min_hours is None else args.min_hours
    query = query_packages()
    chosen: list[tuple[Package, list[MusicFile], int]] = []
    hours = 0.0
    for pkg in packages:
        if args.min_hours and hours >= args.min_hours:
            break
        if is_query_package(pkg.name, query):
            sys.exit(f"bench: {pkg.name} belongs to the bench query set; it cannot be in catalog {catalog_name}")
        files, left_out = music_files(pkg, unpack(bench_dir, catalog_name, pkg.name))
        chosen.append((pkg, files, left_out))
        hours += sum(f.seconds for f in files) / 3600
    if hours < args.min_hours:
        print(f"bench: every package for {catalog_name} gives only {hours:.2f} h of music (< {args.min_hours} h)", file=sys.stderr)

    every = [f for _, files, _ in chosen for f in files]
    if args.list:
        for pkg, files, left_out in chosen:
            print(f"{pkg.name}: {len(files)} music files, {sum(f.seconds for f in files) / 3600:.2f} h "
                  f"({left_out} other audio files left out); licence {pkg.licence}")
        print(f"RESULT {catalog_name} music: {len(chosen)} packages, {len(every)} files, {hours:.2f} h (nothing ingested: --list)")
        return 0

    from sqlalchemy import select

    from pipeline.steps.ingest import ingest  # the step reads the audio and ingest config
    from pipeline.store import db
    from pipeline.store.tables import ingest_sources, tracks

    summary = ingest([f.path for f in every], catalog=catalog_name, workers=args.workers)
    print(summary.line())

    with db.get_engine().connect() as conn:
        sources = {r.source_uri: r for r in conn.execute(select(ingest_sources.c.source_uri, ingest_sources.c.status,
                                                                ingest_sources.c.track_id))}
        catalog = {r.track_id: r for r in conn.execute(select(tracks.c.track_id, tracks.c.source_uri, tracks.c.duration_s)
                                                      .where(tracks.c.catalog == catalog_name))}
        other = {r.track_id: r.catalog for r in conn.execute(select(tracks.c.track_id, tracks.c.catalog).where(tracks.c.catalog != catalog_name))}

    src_root = bench_dir / catalog_name / "src"
    per_package: dict[str, set[str]] = defaultdict(set)  # a track counts for the package of the file it was first found in
    for track_id, r in catalog.items():
        parts = r.source_uri.split(src_root.as_uri() + "/", 1)
        per_package[parts[1].split("/", 1)[0] if len(parts) == 2 else "(other)"].add(track_id)
    rows = []
    elsewhere = []
    for f in every:
        src = sources.get(f.path.resolve().as_uri())
        track_id = src.track_id if src is not None and src.status in ("track", "duplicate") else ""
        if track_id in other:
            elsewhere.append(f"{f.path} (= track {track_id} of catalog {other[track_id]})")
        rows.append((f.package, str(f.path.relative_to(src_root / f.package)), f"{f.seconds:.2f}", f.licence, track_id))

    manifest = bench_dir / catalog_name / "manifest.csv"
    tmp = manifest.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(("package", "file", "seconds", "licence", "track_id"))
        w.writerows(rows)
    tmp.replace(manifest)

    print(f"\n{'package':<20} {'files':>5} {'tracks':>6} {'hours':>6}  licence")
    for pkg, files, left_out in chosen:
        ids = per_package[pkg.name]
        licences = sorted({f.licence for f in files}) if pkg.per_file else [pkg.licence]
        print(f"{pkg.name:<20} {len(files):>5} {len(ids):>6} {sum(catalog[t].duration_s for t in ids) / 3600:>6.2f}  {'; '.join(licences)}"
              f"  [{left_out} other audio files left out]")
    total_h = sum(r.duration_s for r in catalog.values()) / 3600
    n_vectors = vectors([r.duration_s for r in catalog.values()])
    print(f"\nRESULT ingest {catalog_name}: {summary.added} added, {summary.duplicates} duplicate, {summary.unchanged} unchanged, {summary.errors} errors; "
          f"{summary.audio_seconds / 3600:.2f} h decoded in {summary.wall_seconds:.1f} s ({summary.realtime_factor:.0f}x realtime, {args.workers} workers)")
    print(f"RESULT catalog {catalog_name}: {len(catalog)} tracks, {total_h:.2f} h, {n_vectors} vectors (5 s segments) from {len(chosen)} packages "
          f"in {home}; manifest {manifest}")
    # a distractor that is a bench track would be queried: the bench is wrong. Training music that is already a track elsewhere
    # (supertuxkart-data ships a tune of supertux-data, a distractor) stays out of the train split, which is what it must do.
    for line in elsewhere:
        print(f"{'warning' if catalog_name == 'distractors' else 'left out'}: already a track of another catalog, not in "
              f"{catalog_name}: {line}", file=sys.stderr)

    ok = summary.errors == 0 and total_h >= args.min_hours and not (elsewhere and catalog_name == "distractors")
    print("bench: OK" if ok else "bench: FAILED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
