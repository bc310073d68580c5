"""Deterministic synthetic music catalog: the embedded default data set.

Each track has its own tempo, key, mode, chord progression, lead/pad/bass timbres and drum pattern.
Some tracks quote a motif from a bank shared across the catalog, so retrieval must tell apart
tracks that share melodic material. Every random choice of track ``i`` comes from a generator
seeded with ``(seed, i)``, so the same arguments give identical audio in any order and with any
number of worker processes.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.audio.io import write_flac
from pipeline.fsutil import write_json

SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
}
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Chord roots as scale degrees, one chord per bar.
PROGRESSIONS = (
    (0, 4, 5, 3),  # I V vi IV
    (0, 5, 3, 4),  # I vi IV V
    (1, 4, 0, 0),  # ii V I I
    (0, 3, 4, 3),  # I IV V IV
    (5, 3, 0, 4),  # vi IV I V
    (0, 6, 5, 4),  # i VII VI V (in minor)
    (0, 3, 0, 4),  # I IV I V
    (0, 2, 3, 4),  # I iii IV V
)


@dataclass(frozen=True)
class Timbre:
    partials: tuple[float, ...]  # frequency ratios
    amps: tuple[float, ...]
    attack: float
    decay: float  # exponential decay rate (1/s) of the body; 0 = sustained
    release: float
    vibrato: float = 0.0  # depth as a frequency ratio, at 5.5 Hz
    partial_damping: float = 0.0  # extra decay per partial index (plucked strings)


def _harmonics(n: int, power: float = 1.0, odd_only: bool = False) -> tuple[tuple[float, ...], tuple[float, ...]]:
    ks = [k for k in range(1, n + 1) if not odd_only or k % 2 == 1]
    return tuple(float(k) for k in ks), tuple(1.0 / k**power for k in ks)


TIMBRES = {
    "flute": Timbre((1.0, 2.0, 3.0, 4.0), (1.0, 0.35, 0.12, 0.05), 0.06, 0.0, 0.12, vibrato=0.004),
    "brass": Timbre(*_harmonics(10, 1.0), 0.05, 0.4, 0.10, vibrato=0.002),
    "clarinet": Timbre(*_harmonics(11, 1.0, odd_only=True), 0.03, 0.2, 0.08),
    "pluck": Timbre(*_harmonics(8, 1.3), 0.003, 3.0, 0.05, partial_damping=1.5),
    "bell": Timbre((1.0, 2.76, 5.40, 8.93), (1.0, 0.5, 0.25, 0.12), 0.002, 2.0, 0.2, partial_damping=0.8),
    "organ": Timbre((1.0, 2.0, 3.0, 4.0, 6.0, 8.0), (1.0, 0.6, 0.3, 0.3, 0.15, 0.12), 0.01, 0.0, 0.05),
    "epiano": Timbre((1.0, 2.0, 3.0, 4.0, 7.0), (1.0, 0.45, 0.2, 0.1, 0.05), 0.004, 1.2, 0.15, partial_damping=0.5),
}
LEADS = ("flute", "brass", "clarinet", "pluck", "bell", "epiano")
PADS = ("organ", "flute", "epiano", "clarinet")
DRUM_PATTERNS = {  # 16 steps per bar: (kick steps, snare steps, hat steps)
    "rock": ((0, 8, 10), (4, 12), tuple(range(0, 16, 2))),
    "four_on_floor": ((0, 4, 8, 12), (4, 12), (2, 6, 10, 14)),
    "halftime": ((0, 10), (8,), tuple(range(0, 16, 2))),
    "breakbeat": ((0, 6, 10), (4, 12, 15), tuple(range(16))),
    "sparse": ((0,), (), (8,)),
    "none": ((), (), ()),
}
ADJECTIVES = ("Amber", "Blue", "Crimson", "Distant", "Electric", "Golden", "Hollow", "Silver", "Quiet", "Velvet", "Wild", "Neon")
NOUNS = ("Harbor", "Echo", "Garden", "Signal", "River", "Lantern", "Orbit", "Meadow", "Engine", "Mirror", "Canyon", "Tide")


@dataclass(frozen=True)
class TrackSpec:
    index: int
    file: str
    title: str
    album: str
    tempo_bpm: float
    key: str
    mode: str
    progression: tuple[int, ...]
    lead: str
    pad: str
    drums: str
    motif_id: int | None  # index into the shared motif bank, None for a track-specific melody
    seconds: float


def _motif(rng: np.random.Generator) -> tuple[tuple[int, float], ...]:
    """One bar of (scale degree, beats): a contour the lead repeats and transposes."""
    durations = rng.choice([0.5, 0.5, 1.0, 1.0, 1.5, 2.0], size=8)
    notes, total, degree = [], 0.0, int(rng.integers(0, 5))
    for d in durations:
        d = float(min(d, 4.0 - total))
        if d <= 0:
            break
        notes.append((degree, d))
        total += d
        degree = int(np.clip(degree + rng.choice([-2, -1, 1, 2, 3]), -2, 9))
    return tuple(notes)


def motif_bank(seed: int, size: int) -> list[tuple[tuple[int, float], ...]]:
    rng = np.random.default_rng([seed, 1_000_003])
    return [_motif(rng) for _ in range(size)]


def track_spec(seed: int, index: int, seconds: float, n_tracks: int, shared_motif_ratio: float) -> tuple[TrackSpec, np.random.Generator]:
    rng = np.random.default_rng([seed, index])
    n_motifs = max(2, n_tracks // 4)
    shared = rng.random() < shared_motif_ratio
    spec = TrackSpec(
        index=index,
        file=f"track_{index:04d}.flac",
        title=f"{ADJECTIVES[rng.integers(len(ADJECTIVES))]} {NOUNS[rng.integers(len(NOUNS))]}",
        album=f"album_{int(rng.integers(max(1, n_tracks // 6))):02d}",
        tempo_bpm=round(float(rng.uniform(72, 156)), 1),
        key=NOTE_NAMES[int(rng.integers(12))],
        mode=str(rng.choice(list(SCALES))),
        progression=PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))],
        lead=str(rng.choice(LEADS)),
        pad=str(rng.choice(PADS)),
        drums=str(rng.choice(list(DRUM_PATTERNS))),
        motif_id=int(rng.integers(n_motifs)) if shared else None,
        seconds=float(seconds),
    )
    return spec, rng


def _midi_to_hz(m: float) -> float:
    return 440.0 * 2.0 ** ((m - 69.0) / 12.0)


def _degree_to_midi(root_midi: int, scale: tuple[int, ...], degree: int) -> int:
    octave, step = divmod(degree, len(scale))
    return root_midi + 12 * octave + scale[step]


def render_note(freq: float, seconds: float, timbre: Timbre, sr: int, velocity: float = 1.0) -> np.ndarray:
    n_body = max(1, int(seconds * sr))
    n = n_body + int(timbre.release * sr)
    t = np.arange(n, dtype=np.float32) / sr
    phase_mod = 1.0 + timbre.vibrato * np.sin(2 * np.pi * 5.5 * t) if timbre.vibrato else 1.0
    env = np.minimum(1.0, t / max(timbre.attack, 1e-4))
    if timbre.decay:
        env = env * np.exp(-timbre.decay * t)
    release = np.ones(n, dtype=np.float32)
    release[n_body:] = np.linspace(1.0, 0.0, n - n_body, dtype=np.float32)
    out = np.zeros(n, dtype=np.float32)
    nyquist = sr / 2
    for i, (ratio, amp) in enumerate(zip(timbre.partials, timbre.amps, strict=True)):
        f = freq * ratio
        if f >= nyquist * 0.95:
            break
        partial = amp * np.sin(2 * np.pi * f * t * phase_mod)
        if timbre.partial_damping:
            partial = partial * np.exp(-timbre.partial_damping * i * t)
        out += partial.astype(np.float32)
    return velocity * out * env * release


def _drum_kit(sr: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    t = np.arange(int(0.35 * sr), dtype=np.float32) / sr
    kick_f = 45 + 110 * np.exp(-t * 30)
    kick = np.sin(2 * np.pi * np.cumsum(kick_f) / sr) * np.exp(-t * 9)
    ts = t[: int(0.2 * sr)]
    noise = rng.standard_normal(ts.size).astype(np.float32)
    snare = 0.6 * np.diff(noise, prepend=0.0) * np.exp(-ts * 22) + 0.5 * np.sin(2 * np.pi * 185 * ts) * np.exp(-ts * 28)
    th = t[: int(0.06 * sr)]
    hat = 0.25 * np.diff(rng.standard_normal(th.size).astype(np.float32), prepend=0.0) * np.exp(-th * 70)
    return {"kick": kick.astype(np.float32), "snare": snare.astype(np.float32), "hat": hat.astype(np.float32)}


def _add(buf: np.ndarray, start: int, sig: np.ndarray, gains: tuple[float, float]) -> None:
    if start < 0:
        sig, start = sig[-start:], 0
    if start >= buf.shape[0]:
        return
    seg = sig[: buf.shape[0] - start]
    buf[start : start + seg.size, 0] += gains[0] * seg
    buf[start : start + seg.size, 1] += gains[1] * seg


def _pan(position: float) -> tuple[float, float]:
    """Constant-power pan, position in [-1, 1]."""
    angle = (position + 1) * np.pi / 4
    return float(np.cos(angle)), float(np.sin(angle))


def render_track(spec: TrackSpec, rng: np.random.Generator, motifs: list, sr: int, channels: int) -> np.ndarray:
    """Render one track as float32 [frames, channels] peaking at 0.9."""
    n = int(spec.seconds * sr)
    buf = np.zeros((n, 2), dtype=np.float32)
    beat = 60.0 / spec.tempo_bpm
    bar = 4 * beat
    scale = SCALES[spec.mode]
    root = 48 + NOTE_NAMES.index(spec.key)  # C3..B3
    motif = motifs[spec.motif_id] if spec.motif_id is not None else _motif(rng)
    lead, pad = TIMBRES[spec.lead], TIMBRES[spec.pad]
    bass = TIMBRES["pluck"]
    lead_pan, pad_pan = _pan(float(rng.uniform(-0.6, 0.6))), _pan(float(rng.uniform(-0.8, 0.8)))
    pattern = DRUM_PATTERNS[spec.drums]
    kit = _drum_kit(sr, rng)
    swing = float(rng.uniform(0.0, 0.25)) * beat / 4
    n_bars = int(np.ceil(spec.seconds / bar))

    def jitter() -> float:
        return float(rng.normal(0.0, 0.004))

    for b in range(n_bars):
        t0 = b * bar
        chord_degree = spec.progression[b % len(spec.progression)]
        # pad: a triad held for the bar
        for off in (0, 2, 4):
            m = _degree_to_midi(root + 12, scale, chord_degree + off)
            _add(buf, int(t0 * sr), render_note(_midi_to_hz(m), bar * 0.95, pad, sr, 0.12), pad_pan)
        # bass: root on beats 1 and 3, fifth on 2 and 4
        for beat_i in range(4):
            deg = chord_degree + (0 if beat_i % 2 == 0 else 4)
            m = _degree_to_midi(root - 12, scale, deg)
            _add(buf, int((t0 + beat_i * beat + jitter()) * sr), render_note(_midi_to_hz(m), beat * 0.8, bass, sr, 0.35), (0.7, 0.7))
        # lead: the motif, transposed to the chord, rests every fourth bar
        if b % 4 != 3:
            pos = 0.0
            for degree, beats in motif:
                m = _degree_to_midi(root + 12, scale, degree + chord_degree)
                vel = 0.25 * float(rng.uniform(0.8, 1.0))
                _add(buf, int((t0 + pos * beat + jitter()) * sr), render_note(_midi_to_hz(m), beats * beat * 0.9, lead, sr, vel), lead_pan)
                pos += beats
        # drums
        for name, steps, gain in (("kick", pattern[0], 0.5), ("snare", pattern[1], 0.35), ("hat", pattern[2], 0.3)):
            for s in steps:
                ts = t0 + s * beat / 4 + (swing if s % 2 else 0.0)
                _add(buf, int((ts + jitter()) * sr), kit[name] * gain, (0.7, 0.7) if name != "hat" else _pan(0.3))

    fade = min(n // 4, int(0.02 * sr))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)[:, None]
        buf[:fade] *= ramp
        buf[-fade:] *= ramp[::-1]
    buf *= 0.9 / max(float(np.max(np.abs(buf))), 1e-9)
    return buf if channels == 2 else buf.mean(axis=1, keepdims=True)


def _render_one(args: tuple) -> dict:
    seed, index, seconds, n_tracks, ratio, sr, channels, out_dir = args
    spec, rng = track_spec(seed, index, seconds, n_tracks, ratio)
    audio = render_track(spec, rng, motif_bank(seed, max(2, n_tracks // 4)), sr, channels)
    write_flac(Path(out_dir) / spec.file, audio, sr)
    return asdict(spec)


def build_catalog(out_dir: str | Path, tracks: int, seconds: float, seed: int, sample_rate: int, channels: int, shared_motif_ratio: float,
                  workers: int = 1) -> Path:
    """Write ``tracks`` FLAC files and ``catalog.json`` (one spec per track) to ``out_dir``. The product's values are
    configs/pipeline.yaml ``demo_catalog``; tests and benches pass their own.

    Existing files are overwritten with identical content, so a re-run is harmless.
    """
    if tracks < 1:
        raise ValueError(f"--tracks must be at least 1, got {tracks}")
    if seconds < 1:
        raise ValueError(f"--seconds must be at least 1, got {seconds}")
    if channels not in (1, 2):
        raise ValueError(f"--channels must be 1 or 2, got {channels}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(seed, i, seconds, tracks, shared_motif_ratio, sample_rate, channels, str(out)) for i in range(tracks)]
    bar = dict(total=tracks, desc="demo-catalog", unit="track")
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            specs = list(tqdm(pool.map(_render_one, jobs), **bar))
    else:
        specs = [_render_one(j) for j in tqdm(jobs, **bar)]
    write_json(out / "catalog.json", {"seed": seed, "sample_rate": sample_rate, "channels": channels, "tracks": specs})
    return out
