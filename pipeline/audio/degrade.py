"""Audio degradations: what a phone in a bar does to a clip. Used for training augmentation and query sets.

Each function takes mono float32 audio and returns new audio. Noise is scaled to a target SNR against
the clip; filters are 4th-order Butterworth (scipy); a speed change plays the clip faster or slower
(pitch and tempo together, as a turntable or a sped-up upload); reverb convolves with an exponentially
decaying noise tail of a given RT60.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import soxr
from scipy import fft as sp_fft
from scipy import signal


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def colored_noise(n: int, color: str = "white", rng=None) -> np.ndarray:
    """Unit-RMS noise: white (flat), pink (1/f power) or brown (1/f^2 power)."""
    rng = _rng(rng)
    if color == "white":
        noise = rng.standard_normal(n)
    else:
        exponent = {"pink": 0.5, "brown": 1.0}.get(color)
        if exponent is None:
            raise ValueError(f"noise color {color!r}: expected white, pink or brown")
        size = sp_fft.next_fast_len(n, real=True)  # an FFT of an awkward length (large primes) is many times slower
        spectrum = sp_fft.rfft(rng.standard_normal(size))
        freqs = sp_fft.rfftfreq(size)
        freqs[0] = freqs[1] if size > 1 else 1.0
        noise = sp_fft.irfft(spectrum / freqs**exponent, size)[:n]
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


def add_noise(wave: np.ndarray, snr_db: float, color: str = "white", rng=None) -> np.ndarray:
    """Add noise at ``snr_db`` dB below the clip's RMS level."""
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) or 1e-4
    noise = colored_noise(wave.shape[0], color, rng) * (rms / 10 ** (snr_db / 20))
    return (wave + noise).astype(np.float32)


def gain(wave: np.ndarray, db: float) -> np.ndarray:
    return (wave * np.float32(10 ** (db / 20))).astype(np.float32)


def _butter(wave: np.ndarray, sr: int, kind: str, freq) -> np.ndarray:
    sos = signal.butter(4, freq, btype=kind, fs=sr, output="sos")
    return signal.sosfilt(sos, wave).astype(np.float32)


def lowpass(wave: np.ndarray, sr: int, cutoff_hz: float) -> np.ndarray:
    return _butter(wave, sr, "lowpass", cutoff_hz)


def highpass(wave: np.ndarray, sr: int, cutoff_hz: float) -> np.ndarray:
    return _butter(wave, sr, "highpass", cutoff_hz)


def bandpass(wave: np.ndarray, sr: int, low_hz: float, high_hz: float) -> np.ndarray:
    return _butter(wave, sr, "bandpass", [low_hz, high_hz])


def speed(wave: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Play ``factor`` times faster: the clip gets shorter by that factor and its pitch rises with it."""
    return soxr.resample(wave, sr * factor, sr, quality="HQ").astype(np.float32)


def reverb(wave: np.ndarray, sr: int, rt60: float = 0.5, wet: float = 0.35, rng=None) -> np.ndarray:
    """Room reverb: convolve with decaying noise (-60 dB after ``rt60`` s); same length, same RMS."""
    rng = _rng(rng)
    n = max(1, int(rt60 * sr))
    t = np.arange(n) / sr
    ir = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # ln(1000) = 6.9078: -60 dB at rt60
    ir /= np.sqrt(np.sum(ir**2)) + 1e-12
    tail = signal.oaconvolve(wave, ir)[: wave.shape[0]]
    out = (1 - wet) * wave + wet * tail
    scale = np.sqrt(np.mean(wave**2) / (np.mean(out**2) + 1e-12))
    return (out * scale).astype(np.float32)


# The named degradations of the evaluation query sets (query set names look like "5s/pink0db").
QUERY_DEGRADATIONS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "clean": lambda w, sr, rng: w,
    "white20db": lambda w, sr, rng: add_noise(w, 20, "white", rng),
    "white10db": lambda w, sr, rng: add_noise(w, 10, "white", rng),
    "white0db": lambda w, sr, rng: add_noise(w, 0, "white", rng),
    "pink0db": lambda w, sr, rng: add_noise(w, 0, "pink", rng),
    "lowpass3k": lambda w, sr, rng: lowpass(w, sr, 3000),
    "telephone": lambda w, sr, rng: bandpass(w, sr, 300, 3400),
    "gain-12db": lambda w, sr, rng: gain(w, -12),
    "speed0.97": lambda w, sr, rng: speed(w, sr, 0.97),
    "speed1.03": lambda w, sr, rng: speed(w, sr, 1.03),
    "reverb": lambda w, sr, rng: reverb(w, sr, 0.6, 0.4, rng),
}


def apply_named(name: str, wave: np.ndarray, sr: int, rng=None) -> np.ndarray:
    if name not in QUERY_DEGRADATIONS:
        raise ValueError(f"degradation {name!r}: expected one of {', '.join(QUERY_DEGRADATIONS)}")
    return QUERY_DEGRADATIONS[name](wave, sr, _rng(rng))


def random_degradation(wave: np.ndarray, sr: int, rng=None, p: float = 0.5) -> np.ndarray:
    """Training augmentation: each of speed, filter, reverb, noise (0-20 dB SNR, white/pink/brown) and gain
    is applied with probability ``p``, with random parameters, in the order a real signal chain has them."""
    rng = _rng(rng)
    out = wave
    if rng.random() < p:
        out = speed(out, sr, float(rng.uniform(0.95, 1.05)))
    if rng.random() < p:
        kind = rng.choice(["lowpass", "highpass", "bandpass"])
        if kind == "lowpass":
            out = lowpass(out, sr, float(rng.uniform(2000, 8000)))
        elif kind == "highpass":
            out = highpass(out, sr, float(rng.uniform(100, 600)))
        else:
            out = bandpass(out, sr, float(rng.uniform(200, 500)), float(rng.uniform(3000, 6000)))
    if rng.random() < p:
        out = reverb(out, sr, float(rng.uniform(0.2, 0.9)), float(rng.uniform(0.1, 0.5)), rng)
    if rng.random() < p:
        out = add_noise(out, float(rng.uniform(0, 20)), str(rng.choice(["white", "pink", "brown"])), rng)
    if rng.random() < p:
        out = gain(out, float(rng.uniform(-12, 6)))
    return out.astype(np.float32)
