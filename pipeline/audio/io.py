"""Decode any supported file to float32, downmix, resample (soxr) and normalise level."""

from __future__ import annotations

import numpy as np
import soundfile as sf
import soxr

from pipeline.fsutil import atomic_path

# Magic bytes of the containers soundfile can open. Used to tell "not audio at all" from
# "an audio container whose codec cannot be decoded" (libsndfile reports both vaguely).
_SIGNATURES = (
    (b"RIFF", "WAV"),
    (b"RF64", "WAV"),
    (b"fLaC", "FLAC"),
    (b"OggS", "OGG"),
    (b"ID3", "MP3"),
    (b"FORM", "AIFF"),
)


def sniff_container(head: bytes) -> str | None:
    """The container named by a file's first bytes, or None when it looks like no audio file."""
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            return name
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:  # MPEG audio frame sync
        return "MP3"
    return None


def to_mono(data: np.ndarray) -> np.ndarray:
    """[frames, channels] or [frames] -> float32 [frames]."""
    if data.ndim == 1:
        return data.astype(np.float32, copy=False)
    return data.mean(axis=1, dtype=np.float32)


def resample(wave: np.ndarray, sr_in: int, sr_out: int, quality: str = "HQ") -> np.ndarray:
    if sr_in == sr_out:
        return wave
    return soxr.resample(wave, sr_in, sr_out, quality=quality).astype(np.float32, copy=False)


def rms_dbfs(wave: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) if wave.size else 0.0
    return 20.0 * np.log10(rms) if rms > 0 else -np.inf


def normalize(wave: np.ndarray, target_rms_dbfs: float = -20.0, peak_ceiling_dbfs: float = -1.0) -> np.ndarray:
    """Scale to the target RMS level, lowered where needed so the peak stays under the ceiling."""
    level = rms_dbfs(wave)
    if not np.isfinite(level):
        return wave
    gain = 10.0 ** ((target_rms_dbfs - level) / 20.0)
    peak = float(np.max(np.abs(wave)))
    ceiling = 10.0 ** (peak_ceiling_dbfs / 20.0)
    if peak * gain > ceiling:
        gain = ceiling / peak
    return (wave * gain).astype(np.float32, copy=False)


def write_flac(path, wave: np.ndarray, sr: int, subtype: str = "PCM_16") -> None:
    """Atomic FLAC write."""
    with atomic_path(path, suffix=".flac") as tmp:
        sf.write(tmp, wave, sr, format="FLAC", subtype=subtype)


def load(path, sr: int | None = None, quality: str = "HQ") -> tuple[np.ndarray, int]:
    """Read a file as mono float32, resampled to ``sr`` when given. Returns (wave, sample_rate)."""
    data, file_sr = sf.read(path, dtype="float32", always_2d=True)
    wave = to_mono(data)
    if sr is not None and sr != file_sr:
        return resample(wave, file_sr, sr, quality), sr
    return wave, file_sr
