"""Files in, one :class:`~pipeline.asr.base.FileResult` per file out (in input order): what ``cloudtune asr infer``, the model
service's ``asr`` handler and the evaluation share.

Per file: load (16 kHz mono, checked: :func:`pipeline.asr.audio.load_for_asr`), cut audio longer than ``asr.window_s`` at
quiet points, transcribe the pieces in batches of similar length, join the pieces' texts with single spaces. A file that
cannot be loaded becomes a result with ``error`` and the others go on; a failure of the model itself (or a language the
backend refuses) ends the run, since it would fail every file alike.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from pipeline.asr.audio import AsrInputError, load_for_asr, pieces_for
from pipeline.asr.base import FileResult, Transcriber, Transcript
from pipeline.config import AsrSettings

GROUP_BATCHES = 4  # files are loaded this many batches' worth of pieces ahead, then sorted by length: bounded memory, tight batches


@dataclass
class _File:
    file: str
    duration_s: float = 0.0
    seconds: float = 0.0  # load time plus this file's share of each batch it had pieces in
    pieces: list[np.ndarray] = field(default_factory=list)
    transcripts: dict[int, Transcript] = field(default_factory=dict)
    error: str | None = None

    def result(self) -> FileResult:
        if self.error is not None:
            return FileResult(self.file, error=self.error)
        texts = [self.transcripts[i].text.strip() for i in range(len(self.pieces))]
        return FileResult(self.file, " ".join(t for t in texts if t), _language(self.transcripts.values()), self.duration_s, self.seconds)


def _language(transcripts: Iterable[Transcript]) -> str | None:
    """The language the pieces name, weighted by their length (one piece: its own); None when none names one."""
    votes: Counter[str] = Counter()
    for t in transcripts:
        if t.language:
            votes[t.language] += t.duration_s
    return votes.most_common(1)[0][0] if votes else None


def load_pieces(path: str | os.PathLike, sample_rate: int, settings: AsrSettings) -> list[np.ndarray]:
    """One file's pieces (float32 at ``sample_rate``, each at most ``settings.window_s``); raises AsrInputError."""
    wave = load_for_asr(path, sample_rate, settings.min_seconds, settings.silence_rms_dbfs)
    return [wave[a:b] for a, b in pieces_for(wave, sample_rate, settings, path)]


def _load(path: str | os.PathLike, sample_rate: int, settings: AsrSettings) -> _File:
    t0 = time.perf_counter()
    item = _File(str(path))
    try:
        item.pieces = load_pieces(path, sample_rate, settings)
    except AsrInputError as exc:
        item.error = exc.reason
        return item
    item.duration_s = sum(p.shape[0] for p in item.pieces) / sample_rate
    item.seconds = time.perf_counter() - t0
    return item


def _transcribe_group(transcriber: Transcriber, group: list[_File], batch: int, language: str | None) -> None:
    """Every piece of ``group``, longest first in batches of ``batch``; each batch's wall time shared by piece length."""
    order = sorted(((item, i) for item in group for i in range(len(item.pieces))), key=lambda ref: -ref[0].pieces[ref[1]].shape[0])
    for start in range(0, len(order), batch):
        refs = order[start:start + batch]
        t0 = time.perf_counter()
        transcripts = transcriber.transcribe([item.pieces[i] for item, i in refs], language=language)
        elapsed = time.perf_counter() - t0
        total = sum(item.pieces[i].shape[0] for item, i in refs)
        for (item, i), transcript in zip(refs, transcripts, strict=True):
            item.transcripts[i] = transcript
            item.seconds += elapsed * item.pieces[i].shape[0] / total


def transcribe_files(transcriber: Transcriber, paths: Iterable[str | os.PathLike], settings: AsrSettings, language: str | None = None,
                     progress: bool = False) -> Iterator[FileResult]:
    """One :class:`FileResult` per path, in order, as soon as it and the files before it are done.

    ``settings``: configs/asr.yaml ``asr`` (window, splitting, limits, ``batch_size``; a batch holds at most
    ``min(batch_size, transcriber.max_batch)`` pieces). ``language`` forces it (None: ``settings.language``, None there too:
    the backend detects it). ``seconds`` is the file's load time plus its share (by length) of the batches it was in."""
    paths = list(paths)
    language = language if language is not None else settings.language
    batch = max(1, min(settings.batch_size, transcriber.max_batch))
    bar = tqdm(total=len(paths), unit="file", desc=f"asr {transcriber.name}", disable=not progress, leave=False)
    group: list[_File] = []
    try:
        for n, path in enumerate(paths):
            group.append(_load(path, transcriber.sample_rate, settings))
            if sum(len(item.pieces) for item in group) < GROUP_BATCHES * batch and n + 1 < len(paths):
                continue
            _transcribe_group(transcriber, group, batch, language)
            for item in group:
                bar.update(1)
                yield item.result()
            group = []
    finally:
        bar.close()


def stream_file(transcriber: Transcriber, path: str | os.PathLike, settings: AsrSettings, language: str | None = None) -> Iterator[str]:
    """The text of one file as it is decoded, piece by piece through ``transcriber.stream``: joined with ``""`` the pieces are
    the ``text`` :func:`transcribe_files` gives (one space between pieces of a long file). Raises AsrInputError first."""
    language = language if language is not None else settings.language
    said = False
    for piece in load_pieces(path, transcriber.sample_rate, settings):
        started = False
        for chunk in transcriber.stream(piece, language=language):
            if not chunk:
                continue
            if said and not started:
                chunk = " " + chunk.lstrip()
            started = said = True
            yield chunk
