"""`cloudtune` commands of the catalog and its tokens: demo-catalog, ingest, db, report, tokenizer, tokenize, splits."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pipeline import config
from pipeline.cli.common import EXIT_FAILED, EXIT_USAGE, CommandError, one_line
from pipeline.names import TOKENIZER_BACKENDS


def cmd_demo_catalog(args: argparse.Namespace) -> int:
    from pipeline.audio.synth import build_catalog
    from pipeline.config import DemoCatalogSettings

    s = config.section(DemoCatalogSettings, config.load(), "demo_catalog", tracks=args.tracks, seconds=args.seconds, seed=args.seed,
                       sample_rate=args.sample_rate, channels=args.channels)
    out = build_catalog(args.out, s.tracks, s.seconds, s.seed, s.sample_rate, s.channels, s.shared_motif_ratio, workers=args.workers or os.cpu_count() or 1)
    print(f"demo-catalog: {s.tracks} tracks x {s.seconds:g} s (seed {s.seed}, {s.sample_rate} Hz, {s.channels} ch) in {out}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from pipeline.steps.ingest import ingest

    summary = ingest(args.sources, catalog=args.catalog, workers=args.workers)
    print(summary.line())
    if args.json:
        print(json.dumps(summary.to_dict()))
    if summary.ingested == 0:
        print("ingest: error: nothing could be ingested", file=sys.stderr)
        return EXIT_FAILED
    if args.strict and (summary.errors or summary.known_errors):
        print(f"ingest: error: --strict and {summary.errors + summary.known_errors} file(s) failed", file=sys.stderr)
        return EXIT_FAILED
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from pipeline.store import db, migrate

    if args.action == "schema":
        print(db.schema_sql(), end="")
        return 0
    if args.action == "revision":
        if not args.message:
            raise CommandError("db revision: -m MESSAGE is required (what the revision changes)", EXIT_USAGE)
        print(f"db: wrote {migrate.new_revision(args.message)}: fill in upgrade() and downgrade(), then `make schema`")
        return 0
    # init | upgrade: both bring the schema to the newest revision (init is the older name)
    url = db.normalize_url(args.url or config.db_url())
    try:
        engine = db.new_engine(url)
    except (ArgumentError, NoSuchModuleError) as exc:  # the URL is not echoed: it may hold a password
        raise CommandError(f"db {args.action}: not a usable database URL ({one_line(exc)}); expected sqlite:///PATH or postgresql://USER@HOST/DB",
                           EXIT_USAGE) from exc
    except OSError as exc:  # the folder of a SQLite file
        raise CommandError(f"{url}: cannot create {exc.filename}: {exc.strerror}") from exc
    try:
        before, after = migrate.upgrade(engine)
    except migrate.MigrationError as exc:
        raise CommandError(str(exc)) from exc
    finally:
        engine.dispose()
    where = migrate.describe(engine)
    if args.action == "init":
        print(f"db: schema ready at {where} (revision {after})")
    else:
        print(f"db: {where}: revision {before or 'none'} -> {after}" + (" (already the newest)" if before == after else ""))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pipeline.store import reports

    if args.list or not args.name:
        for name, desc in reports.available().items():
            print(f"{name:28s} {desc}")
        return 0
    params = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise CommandError(f"--param {item!r}: expected KEY=VALUE", EXIT_USAGE)
        params[key] = value
    print(reports.format_frame(reports.run_report(args.name, params), args.format))
    return 0


def cmd_tokenizer(args: argparse.Namespace) -> int:
    from pipeline.config import RVQSettings
    from pipeline.steps.tokens import train_tokenizer

    settings = config.section(RVQSettings, config.load(), "rvq", levels=args.levels, codebook_size=args.codebook_size)
    folder, report = train_tokenizer(args.catalog, args.input_root, settings=settings)
    snr = ", ".join(f"{q + 1}: {v:.2f}" for q, v in enumerate(report["mel_snr_db_by_level"]))
    measured_on = f"{report['holdout_tracks']} held-out tracks" if report["holdout_tracks"] else "a training track (nothing held out)"
    print(f"tokenizer: {report['version']} in {folder}\n  trained on {report['train_tracks']} tracks ({report['train_hours']:.2f} h, "
          f"{report['train_frames']} frames) in {report['train_seconds']:.1f} s\n  mel SNR dB by levels on {measured_on}: {snr}")
    return 0


def cmd_tokenize(args: argparse.Namespace) -> int:
    from pipeline.steps.tokens import tokenize

    summary = tokenize(args.backend, args.catalog, args.input_root, args.output_root, device=args.device, max_files=args.max_files,
                       chunk_seconds=args.chunk_seconds, save_format=args.save_format, overwrite=args.overwrite, fail_fast=args.fail_fast,
                       model_dir=args.model_dir, num_quantizers=args.num_quantizers)
    print(summary.line())
    if summary.failed and not (summary.written or summary.skipped):
        print("tokenize: error: no track could be tokenized", file=sys.stderr)
        return EXIT_FAILED
    return 0


def cmd_splits(args: argparse.Namespace) -> int:
    from pipeline.config import SplitSettings
    from pipeline.data.splits import build_splits

    s = config.defaults(SplitSettings, val_ratio=args.val_ratio, test_ratio=args.test_ratio, seed=args.seed, group_by=args.group_by)
    summary = build_splits(args.tokens_root, args.output_root, s.val_ratio, s.test_ratio, s.seed, s.group_by)
    print(summary.line())
    return 0


def _add_source_args(s: argparse.ArgumentParser) -> None:
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--catalog", help="tracks of this catalog in the metrics DB (canonical audio)")
    src.add_argument("--input-root", type=Path, help="audio files under this folder instead of a catalog")


def add_commands(sub) -> None:
    """Add this module's subcommands to the ``cloudtune`` parser's subparsers ``sub``."""
    s = sub.add_parser("demo-catalog", help="synthesize a deterministic demo music catalog (FLAC)")
    s.add_argument("--out", required=True, type=Path, help="output folder")
    s.add_argument("--tracks", type=int, help="number of tracks (config demo_catalog.tracks)")
    s.add_argument("--seconds", type=float, help="length of each track (config demo_catalog.seconds)")
    s.add_argument("--seed", type=int, help="same seed and arguments give identical audio (config demo_catalog.seed)")
    s.add_argument("--sample-rate", type=int, help="config demo_catalog.sample_rate")
    s.add_argument("--channels", type=int, choices=(1, 2), help="config demo_catalog.channels")
    s.add_argument("--workers", type=int, default=0, help="render processes (0 = one per core)")
    s.set_defaults(func=cmd_demo_catalog)

    s = sub.add_parser("ingest", help="decode audio files/folders into canonical FLAC + `tracks` rows")
    s.add_argument("sources", nargs="+", metavar="SRC", help="audio files or folders (walked recursively)")
    s.add_argument("--catalog", default="default", help="catalog name stored with new tracks (default: default)")
    s.add_argument("--workers", type=int, help="decode processes (config ingest.workers; 0 = one per core)")
    s.add_argument("--strict", action="store_true", help="exit non-zero if any file failed")
    s.add_argument("--json", action="store_true", help="also print the summary as one JSON line")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("db", help="metrics database: upgrade | init | schema | revision")
    s.add_argument("action", choices=("upgrade", "init", "schema", "revision"),
                   help="upgrade (or init): create the schema or migrate it to the newest revision, rows kept; schema: print the schema SQL; "
                        "revision: write a new migration script (developers)")
    s.add_argument("--url", help="database URL for upgrade/init (default: $CLOUDTUNE_DB_URL)")
    s.add_argument("-m", "--message", help="revision: what it changes (becomes the file name)")
    s.set_defaults(func=cmd_db)

    s = sub.add_parser("report", help="run a SQL report from sql/reports/ (no NAME: list them)")
    s.add_argument("name", nargs="?", help="report name (file stem) or path to a .sql file")
    s.add_argument("--format", choices=("table", "csv", "json"), default="table")
    s.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="bind :KEY in the SQL")
    s.add_argument("--list", action="store_true", help="list the reports")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("tokenizer", help="tokenizer train: fit the built-in rvq codec on a catalog")
    s.add_argument("action", choices=("train",))
    _add_source_args(s)
    s.add_argument("--levels", type=int, help="residual levels Q (config rvq.levels)")
    s.add_argument("--codebook-size", type=int, help="codes per level (config rvq.codebook_size)")
    s.set_defaults(func=cmd_tokenizer)

    s = sub.add_parser("tokenize", help="turn a catalog (or folder) into token files [Q, T]")
    s.add_argument("--backend", choices=TOKENIZER_BACKENDS, help="config tokenize.backend (rvq trains a codec first when none exists)")
    _add_source_args(s)
    s.add_argument("--output-root", type=Path, help="default: $CLOUDTUNE_HOME/tokens/<catalog>/<codec version>")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda")
    s.add_argument("--max-files", type=int, help="tokenize at most N tracks")
    s.add_argument("--chunk-seconds", type=float, help="one file per chunk of S seconds (config tokenize.chunk_seconds; 0 = per track)")
    s.add_argument("--save-format", choices=("npz", "pt"), help="config tokenize.save_format")
    s.add_argument("--overwrite", action="store_true", help="re-tokenize tracks that already have token files")
    s.add_argument("--fail-fast", action="store_true", help="stop at the first track that fails")
    s.add_argument("--model-dir", help="moss: local MOSS-Audio-Tokenizer directory or hub id (config moss.model_dir)")
    s.add_argument("--num-quantizers", type=int, help="keep the first N levels")
    s.set_defaults(func=cmd_tokenize)

    s = sub.add_parser("splits", help="track-level train/val/test lists of a folder of token files")
    s.add_argument("--tokens-root", required=True, type=Path, help="folder of token files (cloudtune tokenize's output)")
    s.add_argument("--output-root", required=True, type=Path, help="where train.txt, val.txt, test.txt and summary.json go")
    s.add_argument("--val-ratio", type=float, help="config splits.val_ratio (configs/train.yaml)")
    s.add_argument("--test-ratio", type=float, help="config splits.test_ratio")
    s.add_argument("--seed", type=int, help="config splits.seed")
    s.add_argument("--group-by", metavar="FIELD", help="keep tracks with the same value together: folder, or a token metadata field (config splits.group_by)")
    s.set_defaults(func=cmd_splits)
