"""Audio for speech recognition: any file ingest reads -> float32 mono at the model's rate, checked, and long audio cut into
pieces at quiet points.

:func:`load_for_asr` refuses what no recognizer can use with an :class:`AsrInputError` naming the file and the reason; a
caller (:mod:`pipeline.asr.transcribe`) turns it into that file's error row and goes on with the others.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline.audio import io as audio_io
from pipeline.config import AsrSettings

BLOCK_FRAMES = 65536  # decode block: memory stays one mono copy at the file's rate, however many channels
QUIET_FRAME_S = 0.03  # split_at_quiet's frame: about one phone, so a cut lands between words, not inside one


class AsrInputError(ValueError):
    """A file a recognizer cannot use: ``str()`` is ``"<file>: <reason>"`` on one line; ``file`` and ``reason`` apart."""

    def __init__(self, file: str | os.PathLike, reason: str):
        self.file, self.reason = str(file), " ".join(reason.split())
        super().__init__(f"{self.file}: {self.reason}")


def _decode(path: Path) -> tuple[np.ndarray, int, str]:
    """(mono float32 at the file's rate, that rate, "FORMAT/SUBTYPE"); raises AsrInputError for what cannot be opened."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise AsrInputError(path, "no such file") from None
    except OSError as exc:
        raise AsrInputError(path, f"cannot read: {exc.strerror or exc}") from None
    if path.is_dir():
        raise AsrInputError(path, "is a folder, not an audio file")
    if size == 0:
        raise AsrInputError(path, "file is empty (0 bytes)")
    with open(path, "rb") as fh:
        container = audio_io.sniff_container(fh.read(16))
    if container is None:  # libsndfile would say "Format not recognised" or, for text named .mp3, scan it all for a frame sync
        raise AsrInputError(path, "not an audio file (no WAV/FLAC/OGG/MP3/AIFF signature in its first bytes)")
    try:
        with sf.SoundFile(str(path)) as f:
            sr, fmt = f.samplerate, f"{f.format}/{f.subtype}"
            weights = audio_io.mix_weights(f.channels)
            parts = [block @ weights if f.channels > 1 else block[:, 0].copy()
                     for block in f.blocks(BLOCK_FRAMES, dtype="float32", always_2d=True)]
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AsrInputError(path, f"{container} file libsndfile cannot decode: {exc}") from None
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), sr, fmt


def load_for_asr(path: str | os.PathLike, sample_rate: int, min_seconds: float, silence_rms_dbfs: float) -> np.ndarray:
    """Any WAV/FLAC/OGG/MP3/AIFF file (what ingest reads) -> float32 [samples] mono at ``sample_rate`` (soxr, any input rate).

    Raises :class:`AsrInputError` for a missing, empty or non-audio file, one with no frames, NaN/Inf samples, audio whose
    RMS level is under ``silence_rms_dbfs`` (all silent) or shorter than ``min_seconds`` (configs/asr.yaml ``asr``)."""
    path = Path(path)
    wave, sr, fmt = _decode(path)
    if wave.size == 0:
        raise AsrInputError(path, f"{fmt} file with no audio frames (zero length)")
    seconds = wave.size / sr
    level = audio_io.rms_dbfs(wave)
    if np.isnan(level):
        bad = int(np.count_nonzero(~np.isfinite(wave)))
        raise AsrInputError(path, f"{bad} NaN/Inf sample(s)" if bad else "NaN/Inf after downmixing (samples too large to sum)")
    if seconds < min_seconds:
        raise AsrInputError(path, f"{seconds:.3f} s is under the minimum of {min_seconds:g} s (asr.min_seconds)")
    if level < silence_rms_dbfs:
        what = "digital silence (every sample is 0)" if level == -np.inf else f"all silent: level {level:.1f} dBFS"
        raise AsrInputError(path, f"{what} is below asr.silence_rms_dbfs={silence_rms_dbfs:g}")
    return audio_io.resample(wave, sr, sample_rate)


def split_at_quiet(wave: np.ndarray, sr: int, window_s: float, search_s: float) -> list[tuple[int, int]]:
    """Sample ranges ``[(start, end), ...]`` covering ``wave`` end to end, each at most ``window_s`` long.

    Each cut goes at the centre of the quietest :data:`QUIET_FRAME_S` frame (RMS) within the last ``search_s`` seconds
    before the window's end (the latest such frame on a tie, so pieces stay long); audio up to ``window_s`` is one piece."""
    n, window = wave.shape[0], int(window_s * sr)
    search, frame = min(int(search_s * sr), window - 1), max(1, int(QUIET_FRAME_S * sr))
    pieces, start = [], 0
    while n - start > window:
        lo = start + window - search
        frames = search // frame
        if frames < 1:  # a search shorter than one frame: cut at the window's end
            cut = start + window
        else:
            region = wave[lo:lo + frames * frame].astype(np.float64).reshape(frames, frame)
            energy = np.einsum("ij,ij->i", region, region)
            quietest = frames - 1 - int(np.argmin(energy[::-1]))
            cut = lo + quietest * frame + frame // 2
        pieces.append((start, cut))
        start = cut
    pieces.append((start, n))
    return pieces


def pieces_for(wave: np.ndarray, sr: int, settings: AsrSettings, file: str | os.PathLike) -> list[tuple[int, int]]:
    """:func:`split_at_quiet` by ``settings`` (``window_s``, ``split_search_s``); with ``split`` false, audio over the window
    is an :class:`AsrInputError` naming its length and the limit."""
    seconds = wave.shape[0] / sr
    if seconds > settings.window_s and not settings.split:
        raise AsrInputError(file, f"{seconds:.1f} s is over the {settings.window_s:g} s limit (asr.window_s) and asr.split is false")
    return split_at_quiet(wave, sr, settings.window_s, settings.split_search_s)
