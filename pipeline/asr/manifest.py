"""The evaluation manifest of `cloudtune asr eval`: which audio files to transcribe and what they say.

A UTF-8 TSV file without a header, one file per line: ``audio path<TAB>reference text[<TAB>language]``. A relative audio path
is taken from the manifest's own folder (so a manifest travels with its audio). The language (a name as configs/asr.yaml
``asr.language`` spells it, e.g. English, Chinese) is optional: it labels the file in the results and picks its headline metric
(CER for asr_eval.cer_languages); without it the language the recognizer named is used. It does not force the recognizer's
language (that is ``asr.language``), so language identification stays part of what is measured. Blank lines are skipped.
Any other malformed line is a one-line :class:`ManifestError` naming the manifest and the line number.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class ManifestError(ValueError):
    """The manifest cannot be read; the message is one line: ``<manifest>:<line>: <reason>``."""


@dataclass(frozen=True)
class ManifestEntry:
    audio: Path  # absolute (a relative path is resolved against the manifest's folder)
    reference: str
    language: str | None
    line: int  # 1-based line number in the manifest


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    """The manifest's entries in file order. Raises ManifestError for a missing or unreadable file, a malformed line or no entries."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the manifest: {exc.strerror or exc}") from None
    entries = []
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestError(f"{path}:{number}: not UTF-8 text") from None
        if number == 1:
            text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
        if not text.strip():
            continue
        entries.append(_entry(path, number, text))
    if not entries:
        raise ManifestError(f"{path}: no entries (expected lines of audio path<TAB>reference text[<TAB>language])")
    return entries


def _entry(path: Path, number: int, text: str) -> ManifestEntry:
    fields = text.split("\t")
    where = f"{path}:{number}"
    if not 2 <= len(fields) <= 3:
        raise ManifestError(f"{where}: expected audio path<TAB>reference text[<TAB>language], got {len(fields)} tab-separated field(s)")
    audio, reference = fields[0].strip(), fields[1].strip()
    language = fields[2].strip() if len(fields) == 3 else ""
    if not audio:
        raise ManifestError(f"{where}: the audio path is empty")
    if not reference:
        raise ManifestError(f"{where}: the reference text is empty")
    if len(fields) == 3 and not language:
        raise ManifestError(f"{where}: the language field is empty (leave out the second tab for no language)")
    return ManifestEntry((path.parent / audio).resolve(), reference, language or None, number)
