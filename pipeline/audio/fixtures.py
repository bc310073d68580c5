"""Generated audio for tests and benchmarks: tones and one planted file per ingest failure kind.

Nothing here is a mock: every file is a real file that soundfile/libsndfile reads (or rejects) as a
user's file would be.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import soundfile as sf


def tone(seconds: float, sr: int = 44100, freq: float = 440.0, channels: int = 1, seed: int = 0, amp: float = 0.3) -> np.ndarray:
    """A harmonic tone with a little noise: float32 [frames, channels]."""
    t = np.arange(int(seconds * sr)) / sr
    wave = sum(amp / k * np.sin(2 * np.pi * freq * k * t) for k in (1, 2, 3))
    wave = wave + 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    return np.repeat(wave[:, None], channels, axis=1).astype(np.float32)


def write_tone(path: str | Path, seconds: float = 2.0, sr: int = 44100, freq: float = 440.0, channels: int = 1,
               subtype: str | None = None, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, sr, freq, channels, seed), sr, subtype=subtype)
    return path


def _wav_with_codec(path: Path, format_tag: int) -> None:
    """A RIFF/WAVE file whose fmt chunk names a codec libsndfile does not implement."""
    data = bytes(range(256)) * 8
    fmt = struct.pack("<HHIIHHH", format_tag, 1, 24000, 48000, 2, 16, 0)
    riff = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(riff)) + riff)


def write_bad_files(folder: str | Path, max_seconds: float = 1800.0) -> dict[str, str]:
    """Plant one file per failure kind in ``folder``. Returns {file name: expected error_kind}.

    ``max_seconds`` is the configured maximum: the too-long file is 1 s longer.
    """
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    (d / "empty.wav").write_bytes(b"")
    (d / "notes.mp3").write_text("this is a text file named like an mp3\n" * 20)
    (d / "readme.wav").write_text("RIFX? no: plain text named .wav\n" * 20)
    _wav_with_codec(d / "wma_in_wav.wav", 0x0161)  # Windows Media Audio inside RIFF
    sf.write(d / "header_only.wav", np.zeros((0, 1), np.float32), 24000)
    sf.write(d / "short.flac", tone(0.2, 24000), 24000)
    nan = tone(1.0, 24000)
    nan[100:200] = np.nan
    sf.write(d / "nan.wav", nan, 24000, subtype="FLOAT")
    inf = tone(1.0, 24000)
    inf[5] = np.inf
    sf.write(d / "inf.wav", inf, 24000, subtype="FLOAT")
    sf.write(d / "silence.wav", np.zeros((24000, 1), np.float32), 24000)
    # too long: 8 kHz mono PCM_16 keeps the file small (1800 s = 28 MB), written in blocks
    with sf.SoundFile(d / "too_long.wav", "w", 8000, 1, "PCM_16") as fh:
        block = tone(60.0, 8000)
        remaining = int((max_seconds + 1.0) * 8000)
        while remaining > 0:
            fh.write(block[: min(remaining, block.shape[0])])
            remaining -= block.shape[0]
    truncated = d / "truncated.flac"
    sf.write(truncated, tone(5.0, 24000, seed=7), 24000)
    raw = truncated.read_bytes()
    truncated.write_bytes(raw[: len(raw) // 3])
    return {
        "empty.wav": "empty_file",
        "notes.mp3": "not_audio",
        "readme.wav": "not_audio",
        "wma_in_wav.wav": "unsupported_codec",
        "header_only.wav": "no_frames",
        "short.flac": "too_short",
        "nan.wav": "non_finite",
        "inf.wav": "non_finite",
        "silence.wav": "silent",
        "too_long.wav": "too_long",
        "truncated.flac": "decode_error",
    }


def background_recording(seconds: float, sr: int = 24000, seed: int = 0) -> np.ndarray:
    """A stand-in for a recording of a busy room (tests need no fetched files): band-passed noise bursts of random length
    (voices' formant band), a hum with harmonics and a few chirps over a low rumble, mixed; float32 mono, RMS about 0.1."""
    from scipy import signal

    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    out = 0.02 * signal.sosfilt(signal.butter(2, 200, "lowpass", fs=sr, output="sos"), rng.standard_normal(n)) * 10  # rumble
    out += 0.01 * sum(np.sin(2 * np.pi * 50 * k * t) / k for k in (1, 2, 3))  # mains hum
    formant = signal.butter(2, [300, 3000], "bandpass", fs=sr, output="sos")
    for _ in range(int(seconds * 3)):  # "voices": noise bursts of 0.1-0.6 s with a smooth envelope
        length = int(rng.uniform(0.1, 0.6) * sr)
        start = int(rng.integers(0, max(1, n - length)))
        burst = signal.sosfilt(formant, rng.standard_normal(length)) * np.hanning(length) * rng.uniform(0.05, 0.2)
        out[start : start + length] += burst[: n - start]
    for _ in range(max(1, int(seconds / 2))):  # chirps (a door, a phone)
        length = int(rng.uniform(0.2, 0.5) * sr)
        start = int(rng.integers(0, max(1, n - length)))
        tc = np.arange(length) / sr
        out[start : start + length] += (0.05 * signal.chirp(tc, rng.uniform(400, 1500), tc[-1], rng.uniform(1500, 5000)) * np.hanning(length))[: n - start]
    return (out * (0.1 / (np.sqrt(np.mean(out**2)) + 1e-12))).astype(np.float32)


def write_background(folder: str | Path, count: int = 3, seconds: float = 6.0, sr: int = 24000, channels: int = 1) -> list[Path]:
    """``count`` :func:`background_recording` FLAC files (``seconds`` long each, seeds 0 ...) in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        wave = background_recording(seconds, sr, seed=i)
        files.append(folder / f"room{i}.flac")
        sf.write(files[-1], np.repeat(wave[:, None], channels, axis=1), sr)
    return files
