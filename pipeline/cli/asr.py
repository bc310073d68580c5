"""`cloudtune asr`: speech recognition (pipeline/asr/, docs/asr.md). This module creates the ``asr`` command group and its
``infer`` subcommand.

Other ``asr`` subcommands (``eval``, ``convert``) live in their own modules of this package, each with a function
``add_asr_commands(asr_sub)`` that adds its parsers to the group's subparsers; :data:`ASR_COMMAND_MODULES` names them and
:func:`add_commands` calls each one that exists, so adding a subcommand touches only its own module and that tuple.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import sys
from pathlib import Path

from pipeline import config
from pipeline.cli.common import EXIT_FAILED, EXIT_USAGE, CommandError, one_line
from pipeline.names import ASR_BACKENDS, ASR_QUANTIZE, DEVICES, DTYPES

ASR_COMMAND_MODULES = ("pipeline.cli.asr_eval", "pipeline.cli.asr_convert")  # each: add_asr_commands(asr_sub); missing ones are skipped


def _settings(args: argparse.Namespace) -> tuple[config.AsrConfig, config.AsrSettings]:
    """configs/asr.yaml (``--config`` merged over it), the flags winning; a bad flag value is a ConfigError (exit 2)."""
    cfg = config.load_asr(args.config)
    asr = config.section(config.AsrSettings, cfg.raw, "asr", backend=args.backend, batch_size=args.batch_size, language=args.language)
    qwen3 = config.section(config.Qwen3AsrSettings, cfg.raw, "qwen3_asr", model=args.model, device=args.device, dtype=args.dtype,
                           quantize=args.quantize, max_new_tokens=args.max_new_tokens)
    raw = {**cfg.raw, "asr": dataclasses.asdict(asr), "qwen3_asr": dataclasses.asdict(qwen3)}
    return config.AsrConfig({**cfg, "asr": asr, "qwen3_asr": qwen3}, raw), asr


def _results_local(cfg, asr, args):
    from pipeline.asr.registry import get_transcriber
    from pipeline.asr.transcribe import transcribe_files

    with contextlib.redirect_stdout(sys.stderr):  # stdout holds the transcripts only
        transcriber = get_transcriber(asr.backend, cfg)
    return transcribe_files(transcriber, args.audio, asr, progress=sys.stderr.isatty() and not args.json)


def _results_isolated(cfg, asr, args):
    """The same results from a model-service worker process (retries, circuit breaker), ``batch_size`` files per request."""
    from pipeline.asr.base import FileResult
    from pipeline.service.bridge import RemoteError
    from pipeline.service.handlers.asr import model_service

    service = model_service(cfg, config.section(config.ServiceSettings, config.load(), "service"))
    try:
        service.initialize()
        files = [str(f) for f in args.audio]
        for start in range(0, len(files), asr.batch_size):
            reply = service.call("transcribe", {"files": files[start:start + asr.batch_size]})
            yield from (FileResult(**row) for row in reply["results"])
    except RemoteError as exc:
        raise CommandError(exc.message, EXIT_FAILED if exc.retryable else EXIT_USAGE) from None
    finally:
        service.dispose()


def _stream(cfg, asr, args) -> int:
    from pipeline.asr.audio import AsrInputError
    from pipeline.asr.registry import get_transcriber
    from pipeline.asr.transcribe import stream_file

    with contextlib.redirect_stdout(sys.stderr):
        transcriber = get_transcriber(asr.backend, cfg)
    ok = 0
    for path in args.audio:
        prefix = f"{path}\t" if len(args.audio) > 1 else ""
        started = False
        try:
            for chunk in stream_file(transcriber, path, asr):
                print(prefix + chunk if not started else chunk, end="", flush=True)
                started = True
        except AsrInputError as exc:
            if started:
                print(flush=True)
            print(f"cloudtune asr infer: {exc}", file=sys.stderr)
            continue
        print(prefix if not started else "", flush=True)
        ok += 1
    return 0 if ok else EXIT_FAILED


def cmd_infer(args: argparse.Namespace) -> int:
    """Stdout: the text of each file on one line (``FILE<TAB>TEXT`` when several files are given), or with ``--json`` one
    JSON object per file in input order (errors included); a bad file's reason goes to stderr. Exit 0 when any file was
    transcribed, 1 when none was, 2 for bad arguments."""
    cfg, asr = _settings(args)
    if args.stream and (args.json or args.isolated):
        raise CommandError("asr infer: --stream prints words as they are decoded; it goes with neither --json nor --isolated", EXIT_USAGE)
    if args.stream:
        return _stream(cfg, asr, args)
    results = _results_isolated(cfg, asr, args) if args.isolated else _results_local(cfg, asr, args)
    ok = 0
    for result in results:
        if args.json:
            print(json.dumps(result.as_json(), ensure_ascii=False), flush=True)
        elif result.error is None:
            print(f"{result.file}\t{result.text}" if len(args.audio) > 1 else result.text, flush=True)
        if result.error is not None:
            print(f"cloudtune asr infer: {result.file}: {one_line(Exception(result.error))}", file=sys.stderr)
        ok += result.error is None
    return 0 if ok else EXIT_FAILED


def add_commands(sub) -> None:
    """Add the ``asr`` group to the ``cloudtune`` parser's subparsers ``sub``: ``infer`` here, the others from their modules."""
    group = sub.add_parser("asr", help="speech recognition: infer (transcribe audio files), eval (WER/CER), convert (Qwen3-ASR checkpoints); docs/asr.md")
    asr_sub = group.add_subparsers(dest="asr_command", required=True, metavar="ASR_COMMAND")
    add_infer_command(asr_sub)
    for name in ASR_COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # the module exists but something it imports is missing: say so
                raise
            continue
        module.add_asr_commands(asr_sub)


def add_infer_command(asr_sub) -> None:
    s = asr_sub.add_parser("infer", help="transcribe audio files (WAV/FLAC/OGG/MP3/AIFF, any rate): text or --json lines on stdout")
    s.add_argument("audio", nargs="+", type=Path, metavar="AUDIO", help="audio files, transcribed in this order")
    s.add_argument("--backend", choices=ASR_BACKENDS, help="config asr.backend")
    s.add_argument("--model", help="qwen3-asr: a local checkpoint directory (or hub id when online); config qwen3_asr.model")
    s.add_argument("--device", choices=DEVICES, help="qwen3-asr: config qwen3_asr.device (pocketsphinx runs on the CPU)")
    s.add_argument("--dtype", choices=DTYPES, help="qwen3-asr: config qwen3_asr.dtype")
    s.add_argument("--quantize", choices=ASR_QUANTIZE, help="qwen3-asr: int8 weights, bfloat16 activations (config qwen3_asr.quantize)")
    s.add_argument("--config", type=Path, help="a YAML file merged over configs/asr.yaml (only the keys it changes)")
    s.add_argument("--language", help="force the language, e.g. English, Chinese (config asr.language; default: detected)")
    s.add_argument("--batch-size", type=int, help="pieces per forward pass, 1 to 4 (config asr.batch_size)")
    s.add_argument("--max-new-tokens", type=int, help="qwen3-asr: a fixed cap on new tokens per piece (config qwen3_asr.max_new_tokens)")
    s.add_argument("--stream", action="store_true", help="print the words of each file as they are decoded")
    s.add_argument("--json", action="store_true", help="one JSON line per file, in order: {file, text, language, duration_s, seconds, rtf} or {file, error}")
    s.add_argument("--isolated", action="store_true", help="run the model in a worker process through the model service (retries, circuit breaker)")
    s.set_defaults(func=cmd_infer)
