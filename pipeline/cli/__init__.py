"""`cloudtune` command line: one subcommand per pipeline step, each calling a plain function of the steps.

The commands live by theme in this package's modules (``data``, ``models``, ``retrieval``, ``serve``, ``dags``, ``asr``), each with the parser
part of its commands (``add_commands``); this module builds the parser and turns errors into one line and an exit code.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pipeline import __version__, config
from pipeline.cli import asr, dags, data, models, retrieval, serve
from pipeline.cli.common import EXIT_FAILED, EXIT_USAGE, CommandError, one_line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cloudtune", description="CloudTune audio ML pipeline. Artifacts in $CLOUDTUNE_HOME, metrics in $CLOUDTUNE_DB_URL.")
    p.add_argument("--version", action="version", version=f"cloudtune {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (data, models, retrieval, serve, dags, asr):
        group.add_commands(sub)
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
        print(f"cloudtune {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return code
    except Exception as exc:
        if args.verbose:
            raise
        print(f"cloudtune {args.command}: error: {type(exc).__name__}: {one_line(exc)} (-v for the traceback)", file=sys.stderr)
        return EXIT_FAILED


# Errors a user can act on from the message alone: printed as one line, no traceback.
USER_ERRORS = (CommandError, config.ConfigError, FileNotFoundError, ValueError)
