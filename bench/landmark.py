"""A landmark fingerprinter (audfprint) beside CloudTune's evaluation: Recall@1 per query set on the very clips `evaluate` scores.

    PYTHONPATH=. .venv/bin/python bench/landmark.py --run-id RUN [--home CLOUDTUNE_HOME] [--plan full|demo] [--lengths 5 2]
        [--sets clean pink0db ...] [--distractors CATALOG ...] [--background-dir DIR] [--audfprint DIR] [--python PY] [--ncores N]

audfprint (Dan Ellis's landmark fingerprinter: spectrogram peak pairs hashed, matches counted at a consistent time offset) is
the peer of the fingerprint issue. It is never part of this repository: it runs from its own source under var/ in a venv of
its own (what it needs, numpy < 2 among it, is not the project's), as a subprocess through its own command line:

    git clone https://github.com/dpwe/audfprint var/landmark/audfprint      # or unpack a snapshot of it there
    python3 -m venv var/landmark/venv && var/landmark/venv/bin/pip install 'numpy<2' 'scipy<1.14' docopt joblib psutil

It runs with its defaults (`new` and `match` with no option but --dbase, --list, --ncores: 20 landmarks/s, 20-bit hashes,
100 entries per bucket, 11025 Hz, 4 time shifts per query, one match reported). It is fed 11025 Hz mono 16-bit WAV files,
so no ffmpeg is needed: its reader is switched to its own WAV path (`audio_read.HAVE_FFMPEG = False`, set by the one-line
launcher below; that path's np.asfarray is why numpy < 2).

The queries are the evaluation's own: the same gallery and query tracks (pipeline.steps.evaluation.gallery_and_queries: the
run's catalogs plus --distractors, queries from its test split outside the distractors), the same clean clips
(pipeline.evaluate.queries.clean_clips, cut from the source files at audio.sample_rate, the rate of the evaluated embedders),
degraded and levelled as evaluate does (pipeline.evaluate.retrieval.as_queries), then resampled to 11025 Hz for audfprint.
The gallery is each track's canonical audio (what CloudTune's indexes are built from), resampled to 11025 Hz. A query
scores when audfprint's match is its track; no match is a miss. audfprint's database is cached per gallery (and audfprint
source) under var/landmark/db, so a rerun only matches.

Prints, per query set, audfprint's Recall@1 and query count beside the Recall@1 of each embedder in the run's metrics DB
(retrieval_metrics, flat index), with the gallery each side searched, and audfprint's indexing and matching seconds; writes
the same to a JSON file under var/landmark/results (its path printed last). It only reads --home: a metrics DB whose schema
is not at this code's revision is refused, not upgraded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "var" / "landmark"
AFP_SR = 11025  # audfprint's default --samplerate; its WAV reader wants files already at this rate
AFP_FILES = ("audfprint.py", "audfprint_analyze.py", "audfprint_match.py", "hash_table.py", "audio_read.py", "stft.py")
# audfprint's own CLI (audfprint.main) with its WAV reader instead of ffmpeg; argv: -c AUDFPRINT_DIR COMMAND [options] ...
LAUNCHER = ("import sys; sys.path.insert(0, sys.argv.pop(1)); import audio_read; audio_read.HAVE_FFMPEG = False; "
            "import audfprint; audfprint.main(['audfprint'] + sys.argv[1:])")
SETUP = ("git clone https://github.com/dpwe/audfprint {dir} (or unpack a snapshot of it there); "
         "python3 -m venv {venv} && {venv}/bin/pip install 'numpy<2' 'scipy<1.14' docopt joblib psutil")
MATCHED = re.compile(r"^Matched (\S+) .* as (\S+) at ")
NOMATCH = re.compile(r"^NOMATCH (\S+)")
BAR = {"mininterval": 0.1 if sys.stderr.isatty() else 30.0}  # a log gets a progress line every 30 s, not ten a second


# --- audfprint -----------------------------------------------------------------------------------------------


def audfprint_problem(folder: Path, python: Path) -> str | None:
    """Why audfprint cannot run from ``folder`` with ``python`` (one line with the setup commands), or None."""
    setup = SETUP.format(dir=folder, venv=python.parent.parent)
    if not all((folder / f).is_file() for f in AFP_FILES):
        return f"bench/landmark.py: no audfprint source in {folder}: {setup}"
    if not python.exists():
        return f"bench/landmark.py: no Python for audfprint at {python}: {setup}"
    p = subprocess.run([str(python), "-c", "import numpy, scipy, docopt, joblib, psutil; assert hasattr(numpy, 'asfarray')"],
                       capture_output=True, text=True)
    if p.returncode:
        return f"bench/landmark.py: {python} lacks what audfprint needs ({p.stderr.strip().splitlines()[-1]}): {setup}"
    return None


def source_hash(folder: Path) -> str:
    h = hashlib.sha1()
    for name in AFP_FILES:
        h.update((folder / name).read_bytes())
    return h.hexdigest()[:12]


def run_audfprint(python: Path, folder: Path, args: list[str], bar: tqdm | None = None, tick: str = "") -> tuple[list[str], dict]:
    """Run audfprint's CLI; (its output lines, timing): ``seconds`` wall, ``loaded_s`` when it had read its database (match).
    ``bar`` advances on each line that matches regex ``tick``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    timing: dict = {}
    lines: list[str] = []
    with subprocess.Popen([str(python), "-c", LAUNCHER, str(folder), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env) as p:
        for line in p.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            if line.startswith("Read fprints"):
                timing["loaded_s"] = time.perf_counter() - started
            if bar is not None and tick and re.search(tick, line):
                bar.update(1)
    timing["seconds"] = time.perf_counter() - started
    if p.returncode:
        raise RuntimeError(f"audfprint {args[0]} failed (exit {p.returncode}):\n" + "\n".join(lines[-20:]))
    return lines, timing


def parse_matches(lines: list[str]) -> dict[str, str | None]:
    """query file -> the file audfprint matched it to (None: no match), from `match` output at its default verbosity."""
    out: dict[str, str | None] = {}
    for line in lines:
        if m := MATCHED.match(line):
            out.setdefault(m.group(1), m.group(2))  # the first (best) match; --max-matches 1 gives only one
        elif m := NOMATCH.match(line):
            out[m.group(1)] = None
    return out


def recall_at_1(truth: list[str], matched: list[str | None]) -> float:
    """The share of queries whose match is their own track; a query without a match is a miss."""
    return sum(t == m for t, m in zip(truth, matched, strict=True)) / len(truth) if truth else float("nan")


def write_wav(path: Path, wave: np.ndarray, sr: int) -> None:
    """Mono 16-bit WAV at audfprint's rate (the resampler search uses, soxr HQ)."""
    from pipeline.audio import io as audio_io

    sf.write(path, np.clip(audio_io.resample(np.asarray(wave, np.float32), sr, AFP_SR), -1.0, 1.0), AFP_SR, subtype="PCM_16")


def gallery_db(gallery, afp: Path, python: Path, ncores: int, progress: bool) -> tuple[Path, dict]:
    """audfprint's database of the gallery (every track's canonical audio), built once per gallery and audfprint source."""
    from pipeline.embed.catalog import read_track

    key = hashlib.sha1(json.dumps({"audfprint": source_hash(afp), "sr": AFP_SR,
                                   "tracks": [[t.track_id, t.audio_path.name] for t in gallery]}).encode()).hexdigest()[:16]
    db_path, info_path = OUT / "db" / f"{key}.pklz", OUT / "db" / f"{key}.json"
    if db_path.exists() and info_path.exists():
        return db_path, {**json.loads(info_path.read_text()), "cached": True}
    wav_dir = OUT / "tmp" / f"gallery-{key}"
    shutil.rmtree(wav_dir, ignore_errors=True)
    wav_dir.mkdir(parents=True)
    started = time.perf_counter()
    files = []
    for t in tqdm(gallery, desc="landmark: gallery audio", unit="track", disable=not progress, **BAR):
        files.append(wav_dir / f"{t.track_id}.wav")
        write_wav(files[-1], read_track(t, AFP_SR), AFP_SR)  # read_track resamples once; write_wav then has nothing to do
    prepare_s = time.perf_counter() - started
    listing = wav_dir / "files.txt"
    listing.write_text("".join(f"{f}\n" for f in files))
    tmp_db = db_path.with_suffix(".tmp.pklz")
    tmp_db.parent.mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(files), desc="landmark: audfprint new", unit="track", disable=not progress, **BAR) as bar:
        lines, timing = run_audfprint(python, afp, ["new", "--dbase", str(tmp_db), "--ncores", str(ncores), "--list", str(listing)], bar, " ingesting #")
    tmp_db.replace(db_path)
    shutil.rmtree(wav_dir)
    info = {"key": key, "tracks": len(gallery), "hours": sum(t.duration_s for t in gallery) / 3600, "prepare_s": prepare_s,
            "index_s": timing["seconds"], "ncores": ncores, "audfprint": source_hash(afp), "created_at": datetime.now(timezone.utc).isoformat(),
            "summary": [x for x in lines if x.startswith(("Added", "Processed", "Saved"))]}
    info_path.write_text(json.dumps(info, indent=1))
    return db_path, {**info, "cached": False}


# --- the metrics DB (read only) --------------------------------------------------------------------------------


def check_readable(url: str) -> None:
    """Exit unless a SQLite metrics DB is there at this code's schema revision (where opening it through pipeline.store only reads)."""
    from sqlalchemy.engine import make_url

    from pipeline.store import migrate

    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        return
    path = Path(u.database or "")
    if not path.is_file():
        sys.exit(f"bench/landmark.py: no metrics DB at {path}: is --home a CLOUDTUNE_HOME with ingested tracks?")
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        try:
            found = conn.execute(f"SELECT version_num FROM {migrate.version_table().name}").fetchone()
        except sqlite3.OperationalError:
            found = None
    if (found and found[0]) != migrate.head():
        sys.exit(f"bench/landmark.py: {path} is at schema revision {found and found[0]}, this code at {migrate.head()}: "
                 "the bench reads a home and never upgrades it")


def cloudtune_rows(run_id: str, sets: list[str], url: str) -> tuple[dict, dict]:
    """({embedder: {query set: (Recall@1, queries)}}, {embedder: {gallery_tracks, gallery_distractor_tracks, ...}}) of the run's
    flat index rows, as its last `evaluate` stored them."""
    from sqlalchemy import select

    from pipeline.store import db
    from pipeline.store.tables import retrieval_metrics as rm

    with db.connect(url) as conn:
        rows = conn.execute(select(rm.c.embedder, rm.c.query_set, rm.c.metric, rm.c.k, rm.c.value)
                            .where(rm.c.run_id == run_id, rm.c.index_kind == "flat", rm.c.query_set.in_([*sets, "all"]))).all()
    r1: dict[str, dict] = {}
    gallery: dict[str, dict] = {}
    for r in rows:
        if r.query_set == "all":
            if r.metric.startswith("gallery_"):
                gallery.setdefault(r.embedder, {})[r.metric] = r.value
        elif (r.metric, r.k) in (("recall", 1), ("queries", 0)):
            cell = r1.setdefault(r.embedder, {}).setdefault(r.query_set, [None, None])
            cell[0 if r.metric == "recall" else 1] = r.value
    return {e: {q: tuple(v) for q, v in d.items()} for e, d in r1.items()}, gallery


# --- main ----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-id", required=True, help="a run with splits (runs/<id>/splits/test.txt); no trained embedder needed")
    ap.add_argument("--home", type=Path, default=Path(os.environ.get("CLOUDTUNE_HOME", "var")), help="CLOUDTUNE_HOME (read only)")
    ap.add_argument("--plan", help="query plan of configs/eval.yaml (default: queries.plan)")
    ap.add_argument("--lengths", type=float, nargs="+", help="a subset of the plan's query lengths, seconds")
    ap.add_argument("--sets", nargs="+", help="a subset of the plan's sets (names without the length)")
    ap.add_argument("--distractors", action="append", metavar="CATALOG", help="catalog indexed beside the run's, never queried (repeatable)")
    ap.add_argument("--background-dir", type=Path, help="background recordings (default eval.yaml queries.background_dir, relative to this "
                    "repository); point it at the folder the evaluation used to get its background sets")
    ap.add_argument("--audfprint", type=Path, default=OUT / "audfprint", help="audfprint's source folder")
    ap.add_argument("--python", type=Path, default=OUT / "venv" / "bin" / "python", help="the Python that runs audfprint")
    ap.add_argument("--ncores", type=int, default=1, help="audfprint --ncores for new and match")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    progress = not args.no_progress

    problem = audfprint_problem(args.audfprint.resolve(), args.python.absolute())
    if problem:
        print(problem, file=sys.stderr)
        return 2
    afp, python = args.audfprint.resolve(), args.python.absolute()
    if not args.home.is_dir():
        sys.exit(f"bench/landmark.py: --home {args.home} is not a folder")
    os.environ["CLOUDTUNE_HOME"] = str(args.home.resolve())

    from pipeline import config
    from pipeline.evaluate.queries import clean_clips, query_plan
    from pipeline.evaluate.retrieval import as_queries
    from pipeline.evaluate.sets import set_name
    from pipeline.steps.evaluation import gallery_and_queries, query_settings

    url = config.db_url()
    check_readable(url)
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    if subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip():
        commit += "+changes"  # the code that ran is not that commit's
    load_before = os.getloadavg()
    eval_s = config.load_eval()
    qs, background_dir, level = query_settings(args.plan, eval_s)
    background_dir = args.background_dir or background_dir
    run_s = eval_s["evaluation"]
    distractors = sorted(set(run_s.distractors if args.distractors is None else args.distractors))
    try:
        catalogs, gallery, query_tracks = gallery_and_queries(args.run_id, None, distractors, qs.split, url)
    except (ValueError, FileNotFoundError) as exc:  # no splits, no such catalog: what evaluate would say
        sys.exit(f"bench/landmark.py: {exc}")
    sr = config.load_pipeline().audio.sample_rate  # evaluate cuts clips at its first embedder's rate: audio.sample_rate for every one
    plan = query_plan(qs, background_dir, sr)
    lengths = list(plan.lengths_s)
    if args.lengths:
        unknown = sorted(set(args.lengths) - set(lengths))
        if unknown:
            sys.exit(f"bench/landmark.py: --lengths {unknown}: plan {plan.name} has {lengths}")
        lengths = [x for x in lengths if x in args.lengths]
    if args.sets:
        unknown = sorted(set(args.sets) - set(plan.sets) - set(plan.skipped))
        if unknown:
            sys.exit(f"bench/landmark.py: --sets {unknown}: plan {plan.name} has {list(plan.sets) + list(plan.skipped)}")
        plan = replace(plan, sets={n: d for n, d in plan.sets.items() if n in args.sets},
                       skipped={n: why for n, why in plan.skipped.items() if n in args.sets})
    for name, why in plan.skipped.items():
        print(f"landmark: skipping query set {name}: {why}", file=sys.stderr)
    print(f"landmark: run {args.run_id}, catalogs {', '.join(catalogs)} ({len(gallery)} gallery tracks, "
          f"{sum(t.catalog in distractors for t in gallery)} distractor), {len(query_tracks)} query tracks, plan {plan.name}: "
          f"{', '.join(f'{x:g}s' for x in lengths)} x {len(plan.sets)} sets", file=sys.stderr)

    db_path, db_info = gallery_db(gallery, afp, python, args.ncores, progress)
    print(f"landmark: audfprint database {db_path} ({'cached, ' if db_info['cached'] else ''}indexed in {db_info['index_s']:.1f} s)",
          file=sys.stderr)

    started = time.perf_counter()
    clips_of = clean_clips(query_tracks, lengths, qs, sr)
    clips_s = time.perf_counter() - started
    results: dict[str, dict] = {}
    match_timing: dict[str, dict] = {}
    for length in lengths:
        clips = clips_of[length]
        if not clips:
            print(f"landmark: no query track is {length:g} s long: skipping {length:g} s queries", file=sys.stderr)
            continue
        qdir = OUT / "tmp" / f"queries-{os.getpid()}" / f"{length:g}s"  # removed once matched
        shutil.rmtree(qdir, ignore_errors=True)
        files: dict[str, tuple[str, str]] = {}  # query file -> (query set, true track id)
        started = time.perf_counter()
        for name in tqdm(plan.sets, desc=f"landmark: {length:g} s queries", unit="set", disable=not progress, **BAR):
            (qdir / name).mkdir(parents=True)
            for i, (clip, wave) in enumerate(zip(clips, as_queries(clips, name, plan, qs.seed, sr, level), strict=True)):
                path = qdir / name / f"{i:05d}.wav"
                write_wav(path, wave, sr)
                files[str(path)] = (set_name(length, name), clip.track_id)
        prepare_s = time.perf_counter() - started
        listing = qdir / "files.txt"
        listing.write_text("".join(f"{f}\n" for f in files))
        with tqdm(total=len(files), desc=f"landmark: audfprint match {length:g} s", unit="query", disable=not progress, **BAR) as bar:
            lines, timing = run_audfprint(python, afp, ["match", "--dbase", str(db_path), "--ncores", str(args.ncores), "--list", str(listing)],
                                          bar, "^(Matched|NOMATCH) ")
        shutil.rmtree(qdir.parent)
        matched = parse_matches(lines)
        lost = sorted(set(files) - set(matched))
        if lost:
            raise RuntimeError(f"audfprint match gave no line for {len(lost)} queries (first {lost[0]})")
        by_set: dict[str, tuple[list, list]] = {}
        for f, (qset, truth) in files.items():
            got = matched[f]
            t, m = by_set.setdefault(qset, ([], []))
            t.append(truth)
            m.append(Path(got).stem if got else None)
        for qset, (t, m) in by_set.items():
            results[qset] = {"queries": len(t), "recall_at_1": recall_at_1(t, m), "no_match": sum(x is None for x in m),
                             "matches": [[a, b] for a, b in zip(t, m, strict=True)]}  # (true track, audfprint's match) per query
        match_s = timing["seconds"] - timing.get("loaded_s", 0.0)
        match_timing[f"{length:g}s"] = {"queries": len(files), "prepare_s": prepare_s, "db_load_s": timing.get("loaded_s"),
                                        "match_s": match_s, "ms_per_query": 1000 * match_s / len(files)}
    load_after = os.getloadavg()

    sets = list(results)
    ct, ct_gallery = cloudtune_rows(args.run_id, sets, url)
    embedders = sorted(ct)
    head = f"{'query set':<22} {'n':>5} {'audfprint':>9}" + "".join(f" {e:>12}" for e in embedders)
    print(f"\nRecall@1 per query set, run {args.run_id}: audfprint on {len(gallery)} tracks ({db_info['hours']:.2f} h; distractors "
          f"{', '.join(distractors) or 'none'}); CloudTune: flat index rows of the run's last evaluate")
    print(head)
    for qset in sets:
        r = results[qset]
        cells = ""
        for e in embedders:
            v, n = ct[e].get(qset, (None, None))
            cells += f" {'-':>12}" if v is None else f" {v:>12.3f}" if n == r["queries"] else f" {f'{v:.3f} ({n:g})':>12}"
        print(f"{qset:<22} {r['queries']:>5} {r['recall_at_1']:>9.3f}{cells}")
    if sets:
        print(f"{'mean':<22} {'':>5} {np.mean([results[q]['recall_at_1'] for q in sets]):>9.3f}"
              + "".join(f" {np.mean([ct[e][q][0] for q in sets if q in ct[e]]):>12.3f}" if any(q in ct[e] for q in sets) else f" {'-':>12}"
                        for e in embedders))
    for e in embedders:
        pairs = [(results[q]["recall_at_1"], ct[e][q][0]) for q in sets if q in ct[e]]
        g = ct_gallery.get(e, {})
        same = g.get("gallery_tracks") == len(gallery)
        print(f"{e}: beats audfprint on {sum(c > a for a, c in pairs)}, ties {sum(c == a for a, c in pairs)}, loses {sum(c < a for a, c in pairs)} "
              f"of {len(pairs)} sets; its gallery {g.get('gallery_tracks', 0):.0f} tracks ({g.get('gallery_distractor_tracks', 0):.0f} distractor)"
              + ("" if same else f" - NOT audfprint's {len(gallery)}: rerun evaluate with the same --distractors to compare"))
    print(f"audfprint: index {db_info['index_s']:.1f} s for {db_info['tracks']} tracks ({'cached' if db_info['cached'] else 'this run'}; "
          f"audio prepared in {db_info['prepare_s']:.1f} s); "
          + "; ".join(f"match {k}: {v['match_s']:.1f} s for {v['queries']} queries ({v['ms_per_query']:.1f} ms each) + {v['db_load_s'] or 0:.1f} s "
                      f"database load" for k, v in match_timing.items()))
    print(f"load average before/after: {load_before[0]:.1f} / {load_after[0]:.1f}")

    stamp = datetime.now(timezone.utc)
    out = OUT / "results" / f"{args.run_id}-{plan.name}-{db_info['key'][:8]}-{stamp:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": [sys.executable, *sys.argv] if argv is None else ["bench/landmark.py", *argv], "date": stamp.isoformat(), "commit": commit,
        "load_before": load_before, "load_after": load_after, "home": str(args.home.resolve()), "run_id": args.run_id, "plan": plan.name,
        "lengths_s": lengths, "sets": plan.specs(), "skipped_sets": plan.skipped, "catalogs": catalogs, "distractors": distractors,
        "gallery": {"tracks": len(gallery), "distractor_tracks": sum(t.catalog in distractors for t in gallery), "audio": "canonical"},
        "query_tracks": len(query_tracks), "queries_from_canonical": sum(not c.from_source for v in clips_of.values() for c in v),
        "clips_s": clips_s, "audfprint": {"source": str(afp), "source_sha1": db_info["audfprint"], "options": "defaults", "ncores": args.ncores,
                                          "database": str(db_path), **{k: db_info[k] for k in ("index_s", "prepare_s", "cached", "summary")}},
        "matching": match_timing, "audfprint_results": results,
        "cloudtune": {"recall_at_1": {e: {q: {"recall_at_1": v, "queries": n} for q, (v, n) in d.items()} for e, d in ct.items()},
                      "gallery": ct_gallery},
    }, indent=1))
    print(f"landmark: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
