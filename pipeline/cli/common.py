"""What every `cloudtune` command shares: the exit codes and the error a command raises for a reason the user can act on."""

from __future__ import annotations

EXIT_FAILED = 1  # the command ran but its work failed
EXIT_USAGE = 2  # bad input: arguments, config, files


class CommandError(Exception):
    """A whole command failed for a reason the user can act on: one line, exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (a command's error is one line)."""
    return " ".join(str(exc).split())
