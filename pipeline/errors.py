"""How an error reads where one line is wanted: a command's stderr, an HTTP refusal, a `runs` row, a log line. Imports nothing."""

from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (runs of whitespace, newlines included, become one space)."""
    return " ".join(str(exc).split())
