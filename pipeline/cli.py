"""`cloudtune` command line: one subcommand per pipeline step. Each calls a plain function."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from pipeline import __version__, config

EXIT_FAILED = 1  # the command ran but its work failed
EXIT_USAGE = 2  # bad input: arguments, config, files


class CommandError(Exception):
    """A whole command failed for a reason the user can act on: one line, exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


# --- commands -----------------------------------------------------------------------------------


def cmd_demo_catalog(args: argparse.Namespace) -> int:
    from pipeline.audio.synth import build_catalog
    from pipeline.config import DemoCatalogSettings

    s = config.section(DemoCatalogSettings, config.load(), "demo_catalog", tracks=args.tracks, seconds=args.seconds, seed=args.seed,
                       sample_rate=args.sample_rate, channels=args.channels)
    out = build_catalog(args.out, s.tracks, s.seconds, s.seed, s.sample_rate, s.channels, s.shared_motif_ratio, workers=args.workers or os.cpu_count() or 1)
    print(f"demo-catalog: {s.tracks} tracks x {s.seconds:g} s (seed {s.seed}, {s.sample_rate} Hz, {s.channels} ch) in {out}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from pipeline.ingest import ingest

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
    from pipeline.store import db

    if args.action == "init":
        engine = db.get_engine()
        print(f"db: schema ready at {engine.url.render_as_string(hide_password=True)}")
    elif args.action == "schema":
        print(db.schema_sql(), end="")
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
    from pipeline.tokenize.run import train_tokenizer

    settings = config.section(RVQSettings, config.load(), "rvq", levels=args.levels, codebook_size=args.codebook_size)
    folder, report = train_tokenizer(args.catalog, args.input_root, settings=settings)
    snr = ", ".join(f"{q + 1}: {v:.2f}" for q, v in enumerate(report["mel_snr_db_by_level"]))
    measured_on = f"{report['holdout_tracks']} held-out tracks" if report["holdout_tracks"] else "a training track (nothing held out)"
    print(f"tokenizer: {report['version']} in {folder}\n  trained on {report['train_tracks']} tracks ({report['train_hours']:.2f} h, "
          f"{report['train_frames']} frames) in {report['train_seconds']:.1f} s\n  mel SNR dB by levels on {measured_on}: {snr}")
    return 0


def cmd_tokenize(args: argparse.Namespace) -> int:
    from pipeline.tokenize.run import tokenize

    summary = tokenize(args.backend, args.catalog, args.input_root, args.output_root, device=args.device, max_files=args.max_files,
                       chunk_seconds=args.chunk_seconds, save_format=args.save_format, overwrite=args.overwrite, fail_fast=args.fail_fast,
                       model_dir=args.model_dir, num_quantizers=args.num_quantizers)
    print(summary.line())
    if summary.failed and not (summary.written or summary.skipped):
        print("tokenize: error: no track could be tokenized", file=sys.stderr)
        return EXIT_FAILED
    return 0


def cmd_splits(args: argparse.Namespace) -> int:
    from pipeline.data.splits import build_splits

    summary = build_splits(args.tokens_root, args.output_root, args.val_ratio, args.test_ratio, args.seed, args.group_by)
    print(summary.line())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pipeline.tokenize.run import current_rvq
    from pipeline.train.contrastive import train_embedder

    tokens_root = args.tokens_root
    if tokens_root is None:
        codec = current_rvq(args.catalog)
        if codec is None:
            raise CommandError(f"--catalog {args.catalog}: no rvq tokens yet (run: cloudtune tokenize --catalog {args.catalog})", EXIT_USAGE)
        tokens_root = config.home() / "tokens" / args.catalog / codec.name
    if not Path(tokens_root).is_dir():
        raise CommandError(f"--tokens-root {tokens_root}: not a folder", EXIT_USAGE)
    summary = train_embedder(tokens_root, args.splits_dir, run_id=args.run_id, config_path=args.config, device=args.device, epochs=args.epochs,
                             resume=args.resume)
    last = summary["history"][-1] if summary["history"] else {}
    print(f"train: embedder {summary['run_id']}: {len(summary['history'])} epochs, loss {last.get('train_loss', float('nan')):.4f}, "
          f"val R@1 {last.get('val_recall_at_1', float('nan')):.3f} -> {summary['checkpoint']}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    import contextlib

    from pipeline.config import Wav2Vec2Settings
    from pipeline.models import wav2vec2

    settings = config.section(Wav2Vec2Settings, config.load(), "wav2vec2", model=args.model, layer=args.layer, device=args.device)
    try:
        text = args.input.read_text() if args.input else sys.stdin.read()
    except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError) as exc:
        where = f"--input {args.input}" if args.input else "stdin"
        raise CommandError(f"{where}: cannot read: {exc.strerror if isinstance(exc, OSError) else exc}", EXIT_USAGE) from None
    try:
        wave, sr = wav2vec2.parse_request(text, settings.max_seconds)
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    if not settings.model:
        raise CommandError("no model: pass --model (a local wav2vec2 directory or hub id) or set wav2vec2.model", EXIT_USAGE)
    log = logging.getLogger("pipeline.embed")
    log.info("embed: %d samples at %d Hz (%.2f s)", wave.size, sr, wave.size / sr)
    with contextlib.redirect_stdout(sys.stderr):  # stdout holds the result JSON only
        if args.isolated:
            vector = _embed_isolated(settings, wave, sr)
        else:
            features = wav2vec2.features_from_settings(settings)
            vector = features.embed_one(wave, sr)
            log.info("embed: %s", features.last_shapes)
    log.info("embed: embedding [%d]", vector.shape[0])
    print(json.dumps({"embedding": vector.astype(float).tolist()}))
    return 0


def _embed_isolated(settings, wave, sr):
    from pipeline.service.bridge import RemoteError
    from pipeline.service.model_service import ModelService

    init = {"model": settings.model, "layer": settings.layer, "device": settings.device}
    service = ModelService("pipeline.models.wav2vec2:Wav2Vec2Handler", init, isolated=True, name="wav2vec2-worker")
    try:
        service.initialize()
        return service.process(wave, sr)
    except RemoteError as exc:
        raise CommandError(exc.message, EXIT_FAILED if exc.retryable else EXIT_USAGE) from None
    finally:
        service.dispose()


def _add_source_args(s: argparse.ArgumentParser) -> None:
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--catalog", help="tracks of this catalog in the metrics DB (canonical audio)")
    src.add_argument("--input-root", type=Path, help="audio files under this folder instead of a catalog")


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.audio.synth import build_catalog
    from pipeline.config import DemoCatalogSettings
    from pipeline.ingest import ingest
    from pipeline.store import reports

    s = config.section(DemoCatalogSettings, config.load(), "demo_catalog", tracks=args.tracks, seconds=args.seconds, seed=args.seed)
    out = config.home() / "demo" / f"catalog-seed{s.seed}-{s.tracks}x{s.seconds:g}s"
    if not (out / "catalog.json").exists():
        build_catalog(out, s.tracks, s.seconds, s.seed, s.sample_rate, s.channels, s.shared_motif_ratio, workers=os.cpu_count() or 1)
    summary = ingest([out], catalog="demo")
    print(summary.line())
    if not summary.ingested:
        return EXIT_FAILED
    from pipeline.tokenize.run import tokenize

    print(tokenize(catalog="demo").line())
    print("\nCatalog summary (cloudtune report catalog_summary):")
    print(reports.format_frame(reports.run_report("catalog_summary")))
    print("\nTokenizer quality (cloudtune report tokenizer_quality):")
    print(reports.format_frame(reports.run_report("tokenizer_quality")))
    return 0


# --- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cloudtune", description="CloudTune audio ML pipeline. Artifacts in $CLOUDTUNE_HOME, metrics in $CLOUDTUNE_DB_URL.")
    p.add_argument("--version", action="version", version=f"cloudtune {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    s = sub.add_parser("db", help="metrics database: init | schema")
    s.add_argument("action", choices=("init", "schema"), help="init: create missing tables; schema: print the schema SQL")
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
    s.add_argument("--backend", choices=("rvq", "moss"), help="config tokenize.backend (rvq trains a codec first when none exists)")
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
    s.add_argument("--val-ratio", type=float, default=0.1)
    s.add_argument("--test-ratio", type=float, default=0.1)
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--group-by", metavar="FIELD", help="keep tracks with the same value together: folder, or a token metadata field")
    s.set_defaults(func=cmd_splits)

    s = sub.add_parser("train", help="train embedder: contrastive training of the token embedder")
    s.add_argument("model", choices=("embedder",))
    s.add_argument("--config", type=Path, help="training config (default configs/train.yaml)")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--tokens-root", type=Path, help="folder of token files (cloudtune tokenize's output)")
    src.add_argument("--catalog", help="use the catalog's current rvq tokens")
    s.add_argument("--splits-dir", type=Path, help="train/val/test lists (default: the run's, built from the config when missing)")
    s.add_argument("--run-id", help="run id (default: a new one); artifacts in $CLOUDTUNE_HOME/runs/<run_id>/")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda")
    s.add_argument("--epochs", type=int, help="config training.epochs")
    s.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("embed", help="wav2vec2 embedding of one clip: JSON {audio: {array, sampling_rate}} in, {embedding: [...]} out")
    s.add_argument("--model", help="local wav2vec2 directory or hub id (config wav2vec2.model)")
    s.add_argument("--input", type=Path, help="read the JSON from this file instead of stdin")
    s.add_argument("--layer", type=int, help="pool hidden_states[N] instead of last_hidden_state (config wav2vec2.layer)")
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), help="config wav2vec2.device")
    s.add_argument("--isolated", action="store_true", help="run the model in a worker process through the model service")
    s.set_defaults(func=cmd_embed)

    s = sub.add_parser("demo", help="demo catalog + ingest + tokenize + summaries (what `make demo` runs)")
    s.add_argument("--tracks", type=int)
    s.add_argument("--seconds", type=float)
    s.add_argument("--seed", type=int)
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # other libraries' INFO logs (faiss's loader, transformers) stay quiet unless -v
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("pipeline").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        config.validate()
        return args.func(args)
    except KeyboardInterrupt:
        print(f"cloudtune {args.command}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if args.verbose:
            raise
        code = exc.code if isinstance(exc, CommandError) else EXIT_USAGE
        print(f"cloudtune {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return code
    except Exception as exc:
        if args.verbose:
            raise
        print(f"cloudtune {args.command}: error: {type(exc).__name__}: {_one_line(exc)} (-v for the traceback)", file=sys.stderr)
        return EXIT_FAILED


# Errors a user can act on from the message alone: printed as one line, no traceback.
USER_ERRORS = (CommandError, config.ConfigError, FileNotFoundError, ValueError)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
