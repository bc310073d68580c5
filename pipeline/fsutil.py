"""Atomic artifact writes: write to a temp file beside the target, then rename over it."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces ``target`` atomically.

    ``suffix`` keeps the extension for writers that pick the format from it (soundfile, numpy).
    On error the temporary file is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix if suffix is not None else target.suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text(target: str | os.PathLike, content: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(content)
    return Path(target)


def _json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


def write_json(target: str | os.PathLike, obj: Any) -> Path:
    return write_text(target, _json_text(obj))


def write_text_if_changed(target: str | os.PathLike, content: str) -> bool:
    """:func:`write_text` unless ``target`` already holds exactly ``content`` (a re-run leaves a finished file, and its mtime,
    alone); True when it wrote."""
    target = Path(target)
    try:
        if target.read_text() == content:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    write_text(target, content)
    return True


def write_json_if_changed(target: str | os.PathLike, obj: Any) -> bool:
    """:func:`write_json` unless ``target`` already holds the same JSON text; True when it wrote."""
    return write_text_if_changed(target, _json_text(obj))
