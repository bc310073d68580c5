"""The one interface every speech recognizer implements, and what it returns.

A backend gets audio already prepared (:mod:`pipeline.asr.audio`: float32 mono at ``sample_rate``, at most the configured
window long, checked for emptiness, silence and NaN) and turns a batch of such pieces into text. Splitting long audio, joining
the pieces' texts, batching by length, timing and error rows are the callers' job (:mod:`pipeline.asr.transcribe`), so a
backend stays small: a model, its processor, and the decode.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Transcript:
    """The text of one file (or of one piece of it, inside a backend), the language the model named (None where a backend
    cannot tell, e.g. the English-only baseline reports "English"), the audio's length and the wall time spent on it."""

    text: str
    language: str | None
    duration_s: float = 0.0
    seconds: float = 0.0

    @property
    def rtf(self) -> float:
        """Real-time factor: seconds of compute per second of audio (below 1: faster than real time)."""
        return self.seconds / self.duration_s if self.duration_s > 0 else float("nan")


@runtime_checkable
class Transcriber(Protocol):
    """``name`` (the backend, e.g. ``qwen3-asr``), ``model_id`` (what a result row names: a directory, hub id or the bundled
    model), ``sample_rate`` (what :meth:`transcribe` expects) and ``max_batch`` (pieces per forward pass)."""

    name: str
    model_id: str
    sample_rate: int
    max_batch: int

    def transcribe(self, waves: Sequence[np.ndarray], language: str | None = None) -> list[Transcript]:
        """One :class:`Transcript` per wave, in order (``len(waves) <= max_batch``); ``language`` forces it, None detects it."""
        ...

    def stream(self, wave: np.ndarray, language: str | None = None) -> Iterator[str]:
        """The text of one wave as it is decoded: pieces whose concatenation is ``transcribe([wave])[0].text``."""
        ...


@dataclass(frozen=True)
class FileResult:
    """One input file's outcome, as ``cloudtune asr infer --json`` prints it and ``asr_results`` stores it: the transcript
    fields, or ``error`` (a one-line reason) with the rest empty. Produced in input order by
    :func:`pipeline.asr.transcribe.transcribe_files`."""

    file: str
    text: str | None = None
    language: str | None = None
    duration_s: float | None = None
    seconds: float | None = None
    error: str | None = None

    @property
    def rtf(self) -> float | None:
        return self.seconds / self.duration_s if self.seconds is not None and self.duration_s else None

    def as_json(self) -> dict:
        """``{"file", "text", "language", "duration_s", "seconds", "rtf"}`` or ``{"file", "error"}``."""
        if self.error is not None:
            return {"file": self.file, "error": self.error}
        return {"file": self.file, "text": self.text, "language": self.language, "duration_s": self.duration_s,
                "seconds": self.seconds, "rtf": self.rtf}
