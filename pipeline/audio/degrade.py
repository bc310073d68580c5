"""Audio degradations: what a phone in a bar does to a clip. Used for training augmentation and query sets.

Each function takes mono float32 audio and returns new audio. Noise is scaled to a target SNR against
the clip; filters are 4th-order Butterworth (scipy); a speed change plays the clip faster or slower
(pitch and tempo together, as a turntable or a sped-up upload); :func:`reverb` (training augmentation)
convolves with an exponentially decaying noise tail of a given RT60, :func:`room_reverb` (query sets) with
the impulse response of a simulated room; :func:`reencode` round-trips through MP3 or Ogg Vorbis in memory;
:func:`add_background` mixes in real recorded background sound (bench/fetch_background.py fetches it).

Query sets name what they do with a spec (configs/eval.yaml ``queries.plans``; the grammar is
:func:`pipeline.names.degradation_steps`): ``pink:0``, ``telephone``, ``background:5+reverb:0.6+telephone``.
:func:`parse` checks one and :func:`apply` runs its steps left to right, every random draw from one seeded
generator, so a clip, a spec and a seed always give the same audio.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy import fft as sp_fft
from scipy import signal

from pipeline.names import degradation_steps


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


NOISE_COLORS = ("white", "pink", "brown")


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


@functools.lru_cache(maxsize=256)
def _sos(kind: str, freq: float | tuple[float, float], sr: int) -> np.ndarray:
    return signal.butter(4, freq, btype=kind, fs=sr, output="sos")


def _butter(wave: np.ndarray, sr: int, kind: str, freq) -> np.ndarray:
    freq = tuple(float(f) for f in freq) if isinstance(freq, (list, tuple)) else float(freq)
    return signal.sosfilt(_sos(kind, freq, int(sr)), wave).astype(np.float32)


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


# --- real background sound ------------------------------------------------------------------------

BACKGROUND_SUFFIXES = (".flac", ".wav", ".ogg")


def background_files(folder: str | Path | None) -> list[Path]:
    """The recordings under ``folder`` (FLAC, WAV or Ogg, any depth), sorted; none when it is missing."""
    if folder is None or not Path(folder).is_dir():
        return []
    return sorted(f for f in Path(folder).rglob("*") if f.suffix.lower() in BACKGROUND_SUFFIXES and f.is_file())


def load_background(folder: str | Path, sr: int) -> list[np.ndarray]:
    """Every recording of :func:`background_files` as mono float32 at ``sr`` (channels averaged, resampled when needed)."""
    out = []
    for f in background_files(folder):
        data, rate = sf.read(f, dtype="float32", always_2d=True)
        mono = data.mean(axis=1)
        out.append((soxr.resample(mono, rate, sr, quality="HQ") if rate != sr else mono).astype(np.float32))
    return out


def add_background(wave: np.ndarray, recordings: Sequence[np.ndarray] | None, snr_db: float, rng=None) -> np.ndarray:
    """Add real background sound at ``snr_db`` dB below the clip's RMS: a segment at a seeded random offset of a seeded random
    recording among those at least as long as the clip (when none is, one is looped to the clip's length)."""
    if not recordings:
        raise ValueError("no background recordings (queries.background_dir is missing or empty: bench/fetch_background.py fetches them)")
    rng = _rng(rng)
    n = wave.shape[0]
    pool = [r for r in recordings if len(r) >= n] or [r for r in recordings if len(r)]
    for _ in range(8):  # a silent stretch (between two claps of thunder) carries no background: draw again
        rec = pool[int(rng.integers(len(pool)))]
        if len(rec) < n:
            rec = np.tile(rec, -(-n // len(rec)))
        start = int(rng.integers(0, len(rec) - n + 1))
        segment = rec[start : start + n].astype(np.float64)
        level = float(np.sqrt(np.mean(segment**2)))
        if level > 1e-4:
            break
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) or 1e-4
    return (wave + segment * (rms / 10 ** (snr_db / 20) / max(level, 1e-12))).astype(np.float32)


# --- rooms ----------------------------------------------------------------------------------------

ROOMS_PER_RT60 = 8  # simulated rooms per (RT60, sample rate); a clip's generator picks one
_LN1000 = np.log(1000.0)  # amplitude exp(-ln(1000) t / T) is -60 dB at t = T


def decay_time(ir: np.ndarray, sr: int) -> float:
    """The RT60 of an impulse response, in seconds: Schroeder's backward-integrated energy decay, fitted from -5 to -35 dB (T30)
    and extrapolated to 60 dB (from -5 to -25 dB, T20, when the response is too short for T30)."""
    energy = np.cumsum(np.asarray(ir, dtype=np.float64)[::-1] ** 2)[::-1]
    db = 10 * np.log10(energy / energy[0] + 1e-300)
    for end in (-35.0, -25.0):
        if db[-1] < end:
            t = np.arange(len(db)) / sr
            span = (db <= -5.0) & (db >= end)
            slope = np.polyfit(t[span], db[span], 1)[0]  # dB per second, negative
            return float(-60.0 / slope)
    raise ValueError("impulse response too short to measure its decay")


@functools.lru_cache(maxsize=64)
def room_impulse_response(rt60: float, sr: int, room: int = 0) -> np.ndarray:
    """Impulse response from a source to a microphone in simulated room ``room`` (0 to ROOMS_PER_RT60 - 1) whose reverberation
    time is ``rt60`` seconds, starting at the direct sound; unit energy; read-only (cached: one takes 0.01 s at RT60 0.3 s, 0.5-1 s
    at 1 s, 1-3 s at 2 s to build).

    A shoebox room of seeded size, larger for a longer RT60 (about 4 + 8 x RT60 m long, 60-85 % as wide, 2.6-3.2 m + RT60 high),
    a source and a microphone at seeded places 1-4 m apart (0.5 m or more from the walls), simulated with the image-source method of
    pyroomacoustics: wall absorption and reflection order from Sabine's formula. A response so simulated decays more slowly than
    Sabine's formula says (10-50 % longer; shorter in small rooms with very absorbing walls), so it is then given the
    exponential envelope that brings its measured RT60 (:func:`decay_time`) to ``rt60`` (within 1 % from 0.3 s up; a 0.15 s room
    comes out 0-7 % short). The room depends only on (rt60, sr, room): the same spec gives the same rooms anywhere."""
    import pyroomacoustics as pra  # 1 s to import: only when a room is simulated

    g = np.random.default_rng([round(rt60 * 1000), sr, room, 60])
    length = (4 + 8 * rt60) * g.uniform(0.85, 1.15)
    dims = np.array([length, length * g.uniform(0.6, 0.85), g.uniform(2.6, 3.2) + rt60 * g.uniform(0.5, 1.0)])
    while True:
        try:
            absorption, max_order = pra.inverse_sabine(rt60, dims)
            break
        except ValueError:  # the walls would have to absorb more than everything: a smaller room
            dims *= 0.85
    margin = 0.5
    source = g.uniform([margin] * 3, dims - margin)
    source[2] = g.uniform(1.0, min(2.0, dims[2] - margin))
    for _ in range(100):
        distance, angle = g.uniform(1.0, 4.0), g.uniform(0, 2 * np.pi)
        mic = source + distance * np.array([np.cos(angle), np.sin(angle), 0.0])
        mic[2] = g.uniform(1.0, min(1.8, dims[2] - margin))
        if np.all(mic >= margin) and np.all(mic <= dims - margin):
            break
    else:
        mic = dims / 2
    sim = pra.ShoeBox(dims, fs=sr, materials=pra.Material(absorption), max_order=max_order)
    sim.add_source(source)
    sim.add_microphone(mic)
    sim.compute_rir()
    ir = np.asarray(sim.rir[0][0], dtype=np.float64)
    ir = ir[max(0, int(np.argmax(np.abs(ir))) - 40) :]  # from the direct sound (the simulation's delay filter is 81 taps)
    t = np.arange(len(ir)) / sr
    rate, shaped = 0.0, ir  # shaped = ir * exp(-rate * t); an exponential decay needs one step, a bent one a few more
    for _ in range(6):
        measured = decay_time(shaped, sr)
        if abs(measured / rt60 - 1) < 0.01:
            break
        rate += _LN1000 * (1 / rt60 - 1 / measured)
        shaped = ir * np.exp(-rate * t)
    ir = shaped / np.sqrt(np.sum(shaped**2))
    ir.flags.writeable = False
    return ir


def room_reverb(wave: np.ndarray, sr: int, rt60: float, rng=None) -> np.ndarray:
    """The clip played in a simulated room (:func:`room_impulse_response`, one of ROOMS_PER_RT60 rooms of that RT60 picked with
    ``rng``): convolved (FFT overlap-add) with its impulse response; same length, same RMS, not delayed."""
    rng = _rng(rng)
    return convolve_ir(wave, room_impulse_response(float(rt60), int(sr), int(rng.integers(ROOMS_PER_RT60))))


def convolve_ir(wave: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """The clip convolved (FFT overlap-add) with an impulse response that starts at the direct sound; same length and RMS."""
    wet = signal.oaconvolve(np.asarray(wave, dtype=np.float64), ir)[: wave.shape[0]]
    scale = np.sqrt(np.mean(np.square(wave, dtype=np.float64)) / (np.mean(wet**2) + 1e-30))
    return (wet * scale).astype(np.float32)


# --- lossy re-encoding ----------------------------------------------------------------------------

MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


def _mp3_level(sr: int, kbps: float) -> float:
    """libsndfile's compression level (0-1) for a constant ``kbps``: it maps the level linearly onto the bitrates of the MPEG
    version the rate needs, 32-320 kbps (MPEG-1, 32 kHz and up), 8-160 (MPEG-2, 16-24 kHz) or 8-64 (MPEG-2.5), and LAME takes
    the nearest standard bitrate."""
    if sr not in MP3_RATES:
        raise ValueError(f"MP3 has no {sr} Hz (it has {', '.join(map(str, MP3_RATES))})")
    low, high = (32, 320) if sr >= 32000 else (8, 160) if sr >= 16000 else (8, 64)
    if not low <= kbps <= high:
        raise ValueError(f"MP3 at {sr} Hz takes {low}-{high} kbps, not {kbps:g}")
    return min(1.0, max(0.0, (high - (kbps + 0.5)) / (high - low)))  # + 0.5: libsndfile truncates the bitrate it computes


def encode(wave: np.ndarray, sr: int, codec: str, value: float) -> bytes:
    """The clip as an MP3 (constant ``value`` kbps) or Ogg Vorbis (quality ``value``, 0-10 as oggenc's) file, in memory."""
    if codec == "mp3":
        options = {"format": "MP3", "subtype": "MPEG_LAYER_III", "compression_level": _mp3_level(sr, value), "bitrate_mode": "CONSTANT"}
    elif codec == "ogg":
        options = {"format": "OGG", "subtype": "VORBIS", "compression_level": 1.0 - value / 10}  # libsndfile: quality = 1 - level
    else:
        raise ValueError(f"codec {codec!r}: expected mp3 or ogg")
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", sr, 1, **options) as f:
        f.write(np.asarray(wave, dtype=np.float32))
    return buf.getvalue()


def reencode(wave: np.ndarray, sr: int, codec: str, value: float) -> np.ndarray:
    """Encode (:func:`encode`) and decode back: same length and rate, aligned with the input. A decoder that cannot skip the
    encoder's delay (an MP3 too small for LAME's gapless header: 32 kbps at 24 kHz) returns it leading, so a longer decode is
    aligned at the lag where it best matches the input."""
    n = wave.shape[0]
    out, _ = sf.read(io.BytesIO(encode(wave, sr, codec, value)), dtype="float32")
    if out.ndim > 1:
        out = out.mean(axis=1)
    if len(out) > n:
        lag = int(np.argmax(signal.correlate(out, np.asarray(wave, dtype=np.float32), mode="valid", method="fft")))
        out = out[lag : lag + n]
    return np.pad(out, (0, n - len(out))).astype(np.float32)


# --- degradation specs: the query sets ------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    kind: str  # a key of pipeline.names.DEGRADATION_KINDS
    value: float | None = None


@dataclass(frozen=True)
class Degradation:
    """A parsed spec: its steps, applied left to right by :func:`apply`."""

    spec: str
    steps: tuple[Step, ...]

    @property
    def needs_background(self) -> bool:
        return any(s.kind == "background" for s in self.steps)


# kind -> (wave, sr, value, rng, background recordings) -> wave; the kinds are pipeline.names.DEGRADATION_KINDS
STEPS: dict[str, Callable[..., np.ndarray]] = {
    "clean": lambda w, sr, v, rng, bg: w,
    "white": lambda w, sr, v, rng, bg: add_noise(w, v, "white", rng),
    "pink": lambda w, sr, v, rng, bg: add_noise(w, v, "pink", rng),
    "brown": lambda w, sr, v, rng, bg: add_noise(w, v, "brown", rng),
    "background": lambda w, sr, v, rng, bg: add_background(w, bg, v, rng),
    "telephone": lambda w, sr, v, rng, bg: bandpass(w, sr, 300, 3400),
    "lowpass": lambda w, sr, v, rng, bg: lowpass(w, sr, _below_nyquist(v, sr)),
    "highpass": lambda w, sr, v, rng, bg: highpass(w, sr, _below_nyquist(v, sr)),
    "reverb": lambda w, sr, v, rng, bg: room_reverb(w, sr, v, rng),
    "mp3": lambda w, sr, v, rng, bg: reencode(w, sr, "mp3", v),
    "ogg": lambda w, sr, v, rng, bg: reencode(w, sr, "ogg", v),
    "speed": lambda w, sr, v, rng, bg: speed(w, sr, v),
    "gain": lambda w, sr, v, rng, bg: gain(w, v),
}


def _below_nyquist(hz: float, sr: int) -> float:
    if hz >= sr / 2:
        raise ValueError(f"{hz:g} Hz is not below the Nyquist frequency of {sr} Hz audio")
    return hz


def parse(spec: str) -> Degradation:
    """``"background:5+reverb:0.6+telephone"`` -> its Degradation; a one-line ValueError naming the spec and its bad part
    otherwise (the grammar: :func:`pipeline.names.degradation_steps`)."""
    return Degradation(spec.strip(), tuple(Step(kind, value) for kind, value in degradation_steps(spec)))


def apply(wave: np.ndarray, sr: int, degradation: Degradation | str, rng=None, background: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """The clip under ``degradation`` (a Degradation or a spec), its steps applied left to right, every random draw from ``rng``
    (a Generator or a seed), so the same clip, spec and seed give the same audio. ``background``: the recordings a background
    step draws from (:func:`load_background`)."""
    d = parse(degradation) if isinstance(degradation, str) else degradation
    rng = _rng(rng)
    out = np.asarray(wave, dtype=np.float32)
    for step in d.steps:
        try:
            out = STEPS[step.kind](out, sr, step.value, rng, background)
        except ValueError as exc:
            part = step.kind if step.value is None else f"{step.kind}:{step.value:g}"
            raise ValueError(f"degradation {d.spec!r}: {part}: {exc}") from None
    return out.astype(np.float32)


def split_plan(sets: Mapping[str, str], background_dir: str | Path | None, sr: int | None = None) -> tuple[dict[str, Degradation], dict[str, str]]:
    """A plan's sets (name -> spec) parsed and split into those that can run here and those that cannot, name -> a one-line
    reason: a set with background sound when ``background_dir`` is missing or holds no recordings, and (given the sample rate
    ``sr``) a set that cannot run at that rate (``lowpass:10000`` at 16 kHz, an MP3 bitrate the rate's MPEG version lacks),
    found by trying it on a short test signal."""
    have_background = bool(background_files(background_dir))
    probe = colored_noise(sr // 4, "pink", 0) * np.float32(0.1) if sr else None
    runnable, skipped = {}, {}
    for name, spec in sets.items():
        d = parse(spec)
        if d.needs_background and not have_background:
            state = "holds no .flac/.wav/.ogg recordings" if background_dir is not None and Path(background_dir).is_dir() else "does not exist"
            skipped[name] = f"{spec!r} needs real background sound but {background_dir} {state} (bench/fetch_background.py fetches it)"
            continue
        if probe is not None:
            try:
                apply(probe, sr, d, 0, [probe])
            except ValueError as exc:
                skipped[name] = f"cannot run at {sr} Hz: {exc}"
                continue
        runnable[name] = d
    return runnable, skipped


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
        out = add_noise(out, float(rng.uniform(0, 20)), str(rng.choice(NOISE_COLORS)), rng)
    if rng.random() < p:
        out = gain(out, float(rng.uniform(-12, 6)))
    return out.astype(np.float32)
