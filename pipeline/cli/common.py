"""What every `cloudtune` command shares: the exit codes and the error a command raises for a reason the user can act on."""

from __future__ import annotations

from pipeline.errors import one_line  # noqa: F401 - the commands import it from here

EXIT_FAILED = 1  # the command ran but its work failed
EXIT_USAGE = 2  # bad input: arguments, config, files


class CommandError(Exception):
    """A whole command failed for a reason the user can act on: one line, exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code
