"""`cloudtune asr eval`: WER/CER of a recognizer on a manifest of audio files and their reference transcripts.

The `asr` command group is made in :mod:`pipeline.cli.asr`, which calls :func:`add_eval_command` with its subparsers.
Progress goes to stderr; stdout holds the summary (or, with --json, the step's result as one JSON object).
Exit 0: scored; 1: every file failed (rows and report are written all the same); 2: bad arguments, config or manifest.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.cli.common import EXIT_FAILED
from pipeline.names import ASR_BACKENDS, DEVICES


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def cmd_eval(args: argparse.Namespace) -> int:
    from pipeline.steps.asr import evaluate_asr

    result = evaluate_asr(args.manifest, backend=args.backend, model=args.model, device=args.device, run_id=args.run_id, config_path=args.config,
                          progress=True)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"asr eval: run {result['run_id']} ({result['backend']}, {result['model']}): {result['files']} files, {result['errors']} failed, "
              f"{result['audio_hours'] * 3600:.1f} s of audio, mean RTF {_fmt(result['mean_rtf'])}")
        print(f"corpus WER {_fmt(result['wer'])}  CER {_fmt(result['cer'])}  (headline {result['metric'].upper()} {_fmt(result['value'])})")
        if len(result["by_language"]) > 1:
            for language, f in result["by_language"].items():
                print(f"  {language}: {f['files']} files, {f['errors']} failed, WER {_fmt(f['wer'])}, CER {_fmt(f['cer'])}")
        print(f"report: {result['report']}")
    return EXIT_FAILED if result["errors"] == result["files"] else 0


def add_eval_command(asr_sub) -> None:
    """Add ``eval`` to the subparsers ``asr_sub`` of the ``cloudtune asr`` group."""
    s = asr_sub.add_parser("eval", help="WER/CER of a recognizer on a TSV manifest (audio, reference[, language]); rows in asr_results, an HTML report")
    s.add_argument("--manifest", type=Path, required=True,
                   help="TSV without header: audio path<TAB>reference text[<TAB>language]; relative paths from the manifest's folder")
    s.add_argument("--backend", choices=ASR_BACKENDS, help="config asr.backend")
    s.add_argument("--model", help="model directory or hub id (qwen3-asr: config qwen3_asr.model)")
    s.add_argument("--device", choices=DEVICES, help="config qwen3_asr.device")
    s.add_argument("--run-id", help="run id (default: a new one); an existing one is re-run and its rows replaced")
    s.add_argument("--config", type=Path, help="a partial configs/asr.yaml merged over it (e.g. asr_eval: {normalize: none})")
    s.add_argument("--json", action="store_true", help="print the result as one JSON object")
    s.set_defaults(func=cmd_eval)


add_asr_commands = add_eval_command  # the hook pipeline/cli/asr.py calls for each module of ASR_COMMAND_MODULES
