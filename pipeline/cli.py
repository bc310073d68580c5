"""`cloudtune` command line: one subcommand per pipeline step. Each calls a plain function."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from pipeline import __version__, config, paths
from pipeline.names import DEVICES, DTYPES, EMBEDDERS, INDEX_KINDS, TOKENIZER_BACKENDS

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
        raise CommandError(f"db {args.action}: not a usable database URL ({_one_line(exc)}); expected sqlite:///PATH or postgresql://USER@HOST/DB",
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


def cmd_train(args: argparse.Namespace) -> int:
    from pipeline.steps.training import train_fingerprint_model, train_token_embedder

    if args.model == "fingerprint":
        if not args.run_id:
            raise CommandError("train fingerprint: --run-id is required (the run whose splits it trains on)", EXIT_USAGE)
        if args.tokens_root or args.catalog:
            raise CommandError("train fingerprint: --tokens-root/--catalog are for the token embedder; the fingerprint reads audio", EXIT_USAGE)
        summary = train_fingerprint_model(args.splits_dir, run_id=args.run_id, config_path=args.config, device=args.device, epochs=args.epochs,
                                          resume=args.resume)
        last = summary["history"][-1] if summary["history"] else {}
        print(f"train: fingerprint {summary['run_id']}: {len(summary['history'])} epochs, loss {last.get('train_loss', float('nan')):.4f}, "
              f"val R@1 {last.get('val_recall_at_1', float('nan')):.3f}, {summary['train_hours']:.2f} h of train audio -> {summary['checkpoint']}")
        return 0
    if not (args.tokens_root or args.catalog):
        raise CommandError("train embedder: give --tokens-root or --catalog", EXIT_USAGE)
    from pipeline.tokenize.catalog import current_rvq

    tokens_root = args.tokens_root
    if tokens_root is None:
        codec = current_rvq(args.catalog)
        if codec is None:
            raise CommandError(f"--catalog {args.catalog}: no rvq tokens yet (run: cloudtune tokenize --catalog {args.catalog})", EXIT_USAGE)
        tokens_root = paths.tokens_dir(args.catalog, codec.name)
    if not Path(tokens_root).is_dir():
        raise CommandError(f"--tokens-root {tokens_root}: not a folder", EXIT_USAGE)
    summary = train_token_embedder(tokens_root, args.splits_dir, run_id=args.run_id, config_path=args.config, device=args.device, epochs=args.epochs,
                                   resume=args.resume)
    last = summary["history"][-1] if summary["history"] else {}
    print(f"train: embedder {summary['run_id']}: {len(summary['history'])} epochs, loss {last.get('train_loss', float('nan')):.4f}, "
          f"val R@1 {last.get('val_recall_at_1', float('nan')):.3f} -> {summary['checkpoint']}")
    return 0


def _published_or(run_id: str | None) -> str:
    from pipeline.publish import published

    if run_id:
        return run_id
    pub = published()
    if pub is None:
        raise CommandError("no --run-id and no published run (cloudtune evaluate publishes one)", EXIT_USAGE)
    return pub["run_id"]


def cmd_embed_catalog(args: argparse.Namespace) -> int:
    from pipeline.devices import resolve_device
    from pipeline.embed import EmbedderUnavailable
    from pipeline.embed.catalog import embed_catalog
    from pipeline.embed.registry import get_embedder
    from pipeline.steps.retrieval import embedder_settings

    run_id = _published_or(args.run_id)
    try:
        embedder = get_embedder(args.embedder, run_id, resolve_device(args.device), **embedder_settings())
    except EmbedderUnavailable as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    m = embed_catalog(run_id, embedder, args.catalog, settings=config.load_index()["segments"])
    print(f"embed-catalog: {m['count']} segments of {m['tracks']} tracks ({', '.join(m['catalogs'])}) with {args.embedder}, dim {m['dim']}, "
          f"{len(m['failed_tracks'])} failed, {m['reused_tracks']} reused -> {paths.embeddings(run_id, args.embedder).folder}")
    return EXIT_FAILED if m["failed_tracks"] and args.strict else 0


def cmd_index(args: argparse.Namespace) -> int:
    from pipeline.index.faiss_index import build_index

    run_id = _published_or(args.run_id)
    for kind in args.kind:
        m = build_index(run_id, args.embedder, kind, config.load_index())
        print(f"index: {kind} over {m['count']} x {m['dim']} {args.embedder} vectors in {m['build_seconds']:.2f} s, "
              f"{m['bytes_per_vector']:.0f} bytes/vector, params {json.dumps(m['params'])} -> {paths.index(run_id, args.embedder, kind).folder}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pipeline.devices import resolve_device
    from pipeline.evaluate.report import metric_table
    from pipeline.steps.evaluation import evaluate
    from pipeline.steps.retrieval import publish

    run_id = _published_or(args.run_id)
    result = evaluate(run_id, embedders=args.embedder, index_kinds=args.kind, catalogs=args.catalog, distractors=args.distractors,
                      device=resolve_device(args.device), plan=args.plan)
    result["published"] = not args.no_publish and bool(publish(run_id))
    for length in ("5s", "2s"):
        table = metric_table(result["rows"], length)
        if len(table):
            flat = table[table.index.get_level_values("index_kind") == "flat"].droplevel("index_kind")
            print(f"\n{length} queries, exact index (Recall@1, MRR and offset hits per degradation):")
            print(flat.round(3).to_string())
    choice = result["choice"]
    print(f"\nchoice by merit ({choice['criterion']}): {choice['embedder']}/{choice['index_kind']}, {choice['score']:.4f}")
    print(f"reason: {choice['reason']}")
    print(f"\nevaluate: {len(result['rows'])} metric rows for run {run_id}" + (" (published)" if result["published"] else ""))
    print(f"report: {result['report']}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from pipeline.devices import resolve_device
    from pipeline.search import Searcher, search_clips
    from pipeline.steps.retrieval import embedder_settings

    settings = config.load_index()
    searcher = Searcher(settings, args.run_id, args.embedder, args.kind, resolve_device(args.device), embedder_settings=embedder_settings(),
                        audio=config.load_pipeline().audio)
    failed = 0
    for result in search_clips(args.clips, searcher, args.top_k or settings["search"].top_k):
        if "error" in result:
            failed += 1
            print(f"search: error: {result['error']}", file=sys.stderr)
        if args.json:
            print(json.dumps(result), flush=True)
        elif "results" in result:
            print(f"{result['query']}:")
            for hit in result["results"]:
                print(f"  {hit['rank']:3d}. {hit['score']:.4f}  {hit['track_id']}  at {hit['offset_s']:.2f} s  {hit['source_uri']}")
    return EXIT_FAILED if failed == len(args.clips) else 0


def cmd_publish(args: argparse.Namespace) -> int:
    from pipeline.publish import published
    from pipeline.steps.retrieval import publish

    if args.show:
        print(json.dumps(published(), indent=2))
        return 0
    if not args.run_id:
        raise CommandError("--run-id is required (or --show)", EXIT_USAGE)
    record = publish(args.run_id, args.embedder, args.kind)
    print(f"publish: run {record['run_id']} ({record['embedder']}, {record['index_kind']}) is now published")
    return 0


def cmd_dream(args: argparse.Namespace) -> int:
    """The spec's contract: progress on stderr, the JSON result as the last stdout line, exit 0 / 1 (failed) / 2 (bad input)."""
    from pipeline.config import DreamSettings
    from pipeline.train.vae import run_dream

    try:
        settings = config.section(DreamSettings, config.load(), "dream", data_dir=args.data, dataset=args.dataset, epochs=args.epochs,
                                  batch_size=args.batch_size, latent_dim=args.latent_dim, lr=args.lr, out=args.out, device=args.device, seed=args.seed)
    except config.ConfigError as exc:
        result, code = {"success": False, "files": [], "message": str(exc)}, EXIT_USAGE
    else:
        result, code = run_dream(settings)
    if not result["success"]:
        print(f"cloudtune dream: error: {result['message']}", file=sys.stderr)
    else:
        print(result["message"])
    print(json.dumps(result), flush=True)
    return code


def cmd_embed(args: argparse.Namespace) -> int:
    import contextlib

    from pipeline.audio.contract import parse_request
    from pipeline.config import Wav2Vec2Settings
    from pipeline.models import wav2vec2

    settings = config.section(Wav2Vec2Settings, config.load(), "wav2vec2", model=args.model, layer=args.layer, device=args.device,
                              dtype=args.dtype)
    try:
        text = args.input.read_text() if args.input else sys.stdin.read()
    except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError) as exc:
        where = f"--input {args.input}" if args.input else "stdin"
        raise CommandError(f"{where}: cannot read: {exc.strerror if isinstance(exc, OSError) else exc}", EXIT_USAGE) from None
    try:
        wave, sr = parse_request(text, settings.max_seconds, limit_name="wav2vec2.max_seconds")
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
    from dataclasses import asdict

    from pipeline.service import handlers
    from pipeline.service.bridge import RemoteError
    from pipeline.service.model_service import ModelService

    service_settings = config.section(config.ServiceSettings, config.load(), "service")
    service = ModelService(handlers.WAV2VEC2, {"settings": asdict(settings)}, service_settings, isolated=True, name="wav2vec2-worker")
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


def _dag_conf(raw: str | None) -> dict:
    if not raw:
        return {}
    try:
        conf = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CommandError(f"--conf: not valid JSON: {exc}", EXIT_USAGE) from None
    if not isinstance(conf, dict):
        raise CommandError("--conf: expected a JSON object of DAG params, e.g. '{\"epochs\": 2}'", EXIT_USAGE)
    return conf


def run_pipeline_dag(dag_id: str, conf: dict) -> str:
    """One DAG run in-process (dag.test()); returns the pipeline run id, or raises CommandError naming the failed tasks."""
    from pipeline.airflow_local import run_dag
    from pipeline.steps.bookkeeping import pipeline_run_id

    result = run_dag(dag_id, conf)
    run_id = pipeline_run_id(result["dag_run_id"], conf.get("run_id"))
    if result["state"] != "success":
        raise CommandError(f"DAG {dag_id} run {result['dag_run_id']} ended {result['state']}; failed tasks: {', '.join(result['failed_tasks']) or '-'} "
                           f"(pipeline run {run_id}; the task logs above say why)")
    print(f"run: DAG {dag_id} run {result['dag_run_id']} succeeded (pipeline run {run_id})")
    return run_id


def print_metric_table(run_id: str) -> None:
    from pipeline.steps.retrieval import metric_summary
    from pipeline.store import reports

    print(f"\nRetrieval metrics of run {run_id}, read back from {db_name()} (cloudtune report retrieval_run --param run_id={run_id}):")
    print(reports.format_frame(metric_summary(run_id).drop(columns=["run_id"]).round(4)))


def db_name() -> str:
    url = config.db_url()
    return url.split("@")[-1] if "@" in url else url


def cmd_run(args: argparse.Namespace) -> int:
    conf = _dag_conf(args.conf)
    if args.catalog:
        conf["catalog"] = args.catalog
    dag_id = args.dag or config.load_airflow()["run"].dag_id
    print_metric_table(run_pipeline_dag(dag_id, conf))
    return 0


def cmd_airflow(args: argparse.Namespace) -> int:
    from pipeline import airflow_local

    if args.action == "setup":
        pools = airflow_local.ensure_pools(args.gpu_slots)
        env = airflow_local.airflow_env()
        print(f"airflow: metadata DB ready ({env['AIRFLOW__DATABASE__SQL_ALCHEMY_CONN']}); pools: "
              + ", ".join(f"{name} ({slots} slots)" for name, slots in pools.items()))
        return 0
    if args.action == "env":
        for key, value in airflow_local.airflow_env().items():
            print(f"export {key}={value}")
        return 0
    return airflow_local.standalone(args.port)


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.audio.synth import build_catalog
    from pipeline.config import DemoCatalogSettings
    from pipeline.steps.ingest import ingest

    s = config.section(DemoCatalogSettings, config.load(), "demo_catalog", tracks=args.tracks, seconds=args.seconds, seed=args.seed)
    out = paths.demo_catalog_dir(s.seed, s.tracks, s.seconds)
    if not (out / "catalog.json").exists():
        build_catalog(out, s.tracks, s.seconds, s.seed, s.sample_rate, s.channels, s.shared_motif_ratio, workers=os.cpu_count() or 1)
    summary = ingest([out], catalog="demo")
    print(summary.line())
    if not summary.ingested:
        return EXIT_FAILED
    demo = config.load_airflow()["demo"]
    conf = {"catalog": "demo", "catalog_roots": [], "epochs": args.epochs or demo.epochs, "embedding_dim": demo.embedding_dim,
            "fingerprint_epochs": demo.fingerprint_epochs,
            "index_kinds": list(demo.index_kinds), "query_plan": demo.query_plan, **_dag_conf(args.conf)}
    run_id = run_pipeline_dag("audio_retrieval", conf)
    print_metric_table(run_id)
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

    s = sub.add_parser("train", help="train embedder|fingerprint: contrastive training of the token embedder or the log-mel fingerprint model")
    s.add_argument("model", choices=("embedder", "fingerprint"))
    s.add_argument("--config", type=Path, help="training config (default configs/train.yaml; fingerprint: configs/fingerprint.yaml)")
    src = s.add_mutually_exclusive_group()
    src.add_argument("--tokens-root", type=Path, help="embedder: folder of token files (cloudtune tokenize's output)")
    src.add_argument("--catalog", help="embedder: use the catalog's current rvq tokens")
    s.add_argument("--splits-dir", type=Path, help="train/val/test lists (default: the run's, built from the config when missing)")
    s.add_argument("--run-id", help="run id (default: a new one); artifacts in $CLOUDTUNE_HOME/runs/<run_id>/")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda")
    s.add_argument("--epochs", type=int, help="config training.epochs (fingerprint: fingerprint_training.epochs)")
    s.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("embed-catalog", help="embed every catalog segment (window/hop in configs/index.yaml) into runs/<run_id>/embeddings/")
    s.add_argument("--embedder", required=True, choices=EMBEDDERS)
    s.add_argument("--run-id", help="the run (default: the published one); contrastive uses its trained embedder")
    s.add_argument("--catalog", action="append", help="catalog(s) to embed (default: those of the run's split tracks)")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda")
    s.add_argument("--strict", action="store_true", help="exit 1 when any track failed")
    s.set_defaults(func=cmd_embed_catalog)

    s = sub.add_parser("index", help="index build: FAISS flat | hnsw | ivfpq over a run's catalog embeddings")
    s.add_argument("action", choices=("build",))
    s.add_argument("--kind", required=True, action="append", choices=INDEX_KINDS, help="repeat for several kinds")
    s.add_argument("--embedder", required=True, choices=EMBEDDERS)
    s.add_argument("--run-id", help="the run (default: the published one)")
    s.set_defaults(func=cmd_index)

    s = sub.add_parser("evaluate", help="Recall@K, MRR, latency of a run's embedders and indexes; HTML report; publishes the run")
    s.add_argument("--run-id", help="the run (default: the published one)")
    s.add_argument("--embedder", action="append", choices=EMBEDDERS, help="default: configs/eval.yaml evaluation.embedders")
    s.add_argument("--kind", action="append", choices=INDEX_KINDS, help="default: configs/eval.yaml evaluation.index_kinds")
    s.add_argument("--catalog", action="append", help="gallery catalog(s) (default: those of the run's split tracks)")
    s.add_argument("--distractors", action="append", metavar="CATALOG",
                   help="a catalog indexed beside the run's but never queried (repeat for more; default configs/eval.yaml evaluation.distractors)")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda")
    s.add_argument("--plan", help="query plan, a name of configs/eval.yaml queries.plans (default: queries.plan)")
    s.add_argument("--no-publish", action="store_true", help="do not publish the run after the evaluation")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("search", help="find the catalog tracks of audio clips (default: the published run)")
    s.add_argument("clips", nargs="+", metavar="CLIP")
    s.add_argument("--top-k", type=int, help="tracks per clip (default configs/index.yaml search.top_k)")
    s.add_argument("--run-id", help="search this run instead of the published one")
    s.add_argument("--embedder", choices=EMBEDDERS, help="default: the published one")
    s.add_argument("--kind", choices=INDEX_KINDS, help="index kind (default: the published one)")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda")
    s.add_argument("--json", action="store_true", help="one JSON line per clip")
    s.set_defaults(func=cmd_search)

    s = sub.add_parser("publish", help="make an evaluated run the one search and the nightly DAG use (--show: the current one)")
    s.add_argument("--run-id")
    s.add_argument("--embedder", choices=EMBEDDERS, help="default: the evaluation's choice by merit (configs/index.yaml publish)")
    s.add_argument("--kind", choices=INDEX_KINDS, help="default: the evaluation's choice by merit (for a named --embedder, its best kind)")
    s.add_argument("--show", action="store_true")
    s.set_defaults(func=cmd_publish)

    s = sub.add_parser("dream", help="train the MNIST VAE (dream generator) and save 64 dreamed digits as an 8x8 grid; JSON result on stdout")
    s.add_argument("--data", help="folder with the MNIST IDX files (config dream.data_dir)")
    s.add_argument("--dataset", choices=("mnist", "digits"), help="mnist (IDX files under --data) | digits (bundled with scikit-learn, offline)")
    s.add_argument("--epochs", type=int, help="config dream.epochs")
    s.add_argument("--batch-size", type=int, help="config dream.batch_size")
    s.add_argument("--latent-dim", type=int, help="config dream.latent_dim")
    s.add_argument("--lr", type=float, help="Adam learning rate (config dream.lr)")
    s.add_argument("--out", help="sample grid PNG (config dream.out); the other files go beside it")
    s.add_argument("--device", help="auto | cpu | cuda (config dream.device)")
    s.add_argument("--seed", type=int, help="config dream.seed")
    s.set_defaults(func=cmd_dream)

    s = sub.add_parser("embed", help="wav2vec2 embedding of one clip: JSON {audio: {array, sampling_rate}} in, {embedding: [...]} out")
    s.add_argument("--model", help="local wav2vec2 directory or hub id (config wav2vec2.model)")
    s.add_argument("--input", type=Path, help="read the JSON from this file instead of stdin")
    s.add_argument("--layer", type=int, help="pool hidden_states[N] instead of last_hidden_state (config wav2vec2.layer)")
    s.add_argument("--device", choices=DEVICES, help="config wav2vec2.device")
    s.add_argument("--dtype", choices=DTYPES,
                   help="config wav2vec2.dtype (auto: bfloat16 on CUDA and on CPUs with native bfloat16; float32 matches transformers' default exactly)")
    s.add_argument("--isolated", action="store_true", help="run the model in a worker process through the model service")
    s.set_defaults(func=cmd_embed)

    s = sub.add_parser("demo", help="demo catalog + ingest + `cloudtune run` of audio_retrieval + its metric table (what `make demo` runs)")
    s.add_argument("--tracks", type=int)
    s.add_argument("--seconds", type=float)
    s.add_argument("--seed", type=int)
    s.add_argument("--epochs", type=int, help="embedder epochs (config airflow.yaml demo.epochs)")
    s.add_argument("--conf", help="more DAG params as a JSON object (they win over the demo's)")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("run", help="run a DAG (default audio_retrieval) in-process with Airflow's dag.test(), then print its metric table")
    s.add_argument("--catalog", help="the catalog param (default: configs/airflow.yaml dag.catalog)")
    s.add_argument("--conf", help='DAG params as a JSON object, e.g. \'{"epochs": 2, "catalog_roots": ["/music"]}\'')
    s.add_argument("--dag", choices=("audio_retrieval", "nightly_reindex"), help="default: configs/airflow.yaml run.dag_id")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("airflow", help="setup: metadata DB + `gpu` pool | env: the Airflow environment | standalone: the Airflow UI on this machine")
    s.add_argument("action", choices=("setup", "env", "standalone"))
    s.add_argument("--gpu-slots", type=int, help="setup: slots of the gpu pool (default: visible GPUs, at least 1)")
    s.add_argument("--port", type=int, default=8080, help="standalone: api-server port")
    s.set_defaults(func=cmd_airflow)
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
    except BrokenPipeError:  # the reader went away (`cloudtune report ... | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
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
