"""`cloudtune asr convert SRC DST`: an official Qwen3-ASR release checkpoint (config.json with a nested ``thinker_config``)
rewritten in the layout transformers loads (:func:`pipeline.asr.qwen3_convert.convert_checkpoint`; atomic, tensors renamed,
never cast). ``load_qwen3_asr`` converts such a checkpoint by itself on first use (into a cache under ``$CLOUDTUNE_HOME``);
this command does it ahead of time, into a folder of your choice.

Exit 0: converted (DST printed on stdout); 2: a missing SRC, an SRC that is not a model directory or is already in
transformers' layout, an existing DST; each as one line on stderr.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.common import EXIT_USAGE, CommandError, one_line


def cmd_convert(args: argparse.Namespace) -> int:
    from pipeline.asr.qwen3_convert import convert_checkpoint, is_original_layout

    src, dst = args.src.expanduser(), args.dst.expanduser()
    if not src.is_dir():
        raise CommandError(f"asr convert: {src} does not exist or is not a directory", EXIT_USAGE)
    if not (src / "config.json").is_file():
        raise CommandError(f"asr convert: {src} has no config.json: not a Qwen3-ASR model directory", EXIT_USAGE)
    if not is_original_layout(src):
        raise CommandError(f"asr convert: {src} is already in transformers' layout (no thinker_config in config.json): "
                           "load it as it is, there is nothing to convert", EXIT_USAGE)
    if dst.exists():
        raise CommandError(f"asr convert: {dst} exists already; remove it or pick another destination", EXIT_USAGE)
    try:
        out = convert_checkpoint(src, dst)
    except ValueError as exc:  # tensors that do not fit the model, a tokenizer it cannot read
        raise CommandError(f"asr convert: {one_line(exc).removeprefix('qwen3-asr convert: ')}", EXIT_USAGE) from None
    print(out)
    return 0


def add_asr_commands(asr_sub) -> None:
    """Add ``convert`` to the subparsers ``asr_sub`` of the ``cloudtune asr`` group (the hook of pipeline/cli/asr.py)."""
    s = asr_sub.add_parser("convert", help="convert an official Qwen3-ASR release checkpoint (thinker_config) to transformers' layout")
    s.add_argument("src", type=Path, metavar="SRC", help="the release checkpoint's directory (config.json with thinker_config, model*.safetensors)")
    s.add_argument("dst", type=Path, metavar="DST", help="the directory to write (must not exist; written atomically)")
    s.set_defaults(func=cmd_convert)
