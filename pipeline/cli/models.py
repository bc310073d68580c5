"""`cloudtune` commands of training and models: train, dream, embed."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline import config, paths
from pipeline.cli.common import EXIT_FAILED, EXIT_USAGE, CommandError
from pipeline.names import DEVICES, DTYPES


def cmd_train(args: argparse.Namespace) -> int:
    from pipeline.steps.training import train_fingerprint_model, train_token_embedder

    if args.model == "fingerprint":
        if not args.run_id:
            raise CommandError("train fingerprint: --run-id is required (the run whose splits it trains on)", EXIT_USAGE)
        if args.tokens_root or args.catalog:
            raise CommandError("train fingerprint: --tokens-root/--catalog are for the token embedder; the fingerprint reads audio", EXIT_USAGE)
        summary = train_fingerprint_model(args.splits_dir, run_id=args.run_id, config_path=args.config, device=args.device, epochs=args.epochs,
                                          train_catalogs=args.train_catalog, resume=args.resume)
        last = summary["history"][-1] if summary["history"] else {}
        print(f"train: fingerprint {summary['run_id']}: {len(summary['history'])} epochs, loss {last.get('train_loss', float('nan')):.4f}, "
              f"val R@1 {last.get('val_recall_at_1', float('nan')):.3f}, {summary['train_hours']:.2f} h of train audio -> {summary['checkpoint']}")
        return 0
    if args.train_catalog:
        raise CommandError("train embedder: --train-catalog is for the fingerprint (the token embedder trains on the run's train split)", EXIT_USAGE)
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


def add_commands(sub) -> None:
    """Add this module's subcommands to the ``cloudtune`` parser's subparsers ``sub``."""
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
    s.add_argument("--train-catalog", action="append", metavar="NAME", help="fingerprint: train on every track of this catalog too, beside "
                   "the run's train split (repeatable; default fingerprint_training.train_catalogs): music never queried, never a distractor")
    s.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    s.set_defaults(func=cmd_train)

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
