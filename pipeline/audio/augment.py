"""Training augmentation of the fingerprint embedder: a random chain of what users' clips go through (configs/fingerprint.yaml
``augment``), in the order sound meets it: the playback speed, noise and background sound in the room, the room's echo, then
the phone's band or a lossy upload, then the level.

The primitives are those of the query sets (:mod:`pipeline.audio.degrade`), with parameters drawn from ranges rather than fixed,
and never the evaluation's own material: background sound comes from the train pool (``var/background/train``; the evaluation
reads ``var/background/eval``, bench/fetch_background.py keeps the two apart) and rooms are simulated with ids the query sets
never use (they use rooms 0-7 of three RT60s at the catalog rate).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from pipeline.audio import degrade as D
from pipeline.config import AugmentSettings

TRAIN_ROOMS = 1000  # room ids from here on: rooms the query sets (ids 0 .. ROOMS_PER_RT60 - 1) never simulate
IR_SECONDS = 0.8  # impulse responses cut here (-40 dB at RT60 1.2 s): the convolution of a view stays cheap
CODECS = (("mp3", (16.0, 24.0, 32.0, 48.0, 64.0)), ("ogg", (0.0, 1.0, 2.0, 4.0)))


class Augmenter:
    """``augmenter(wave, n, rng)``: a degraded ``n``-sample view of the middle of ``wave`` (which should hold at least
    ``margin(n)`` samples, so a slowed-down clip still fills ``n`` and a room has audio before the view to echo)."""

    def __init__(self, s: AugmentSettings, sample_rate: int, background: list[np.ndarray] | None = None, seed: int = 0):
        self.s, self.sr = s, sample_rate
        self.background = [b for b in (background or []) if len(b) >= sample_rate // 2]
        rng = np.random.default_rng([seed, 77])  # rooms simulated once, here: DataLoader workers inherit them
        self.rooms = [D.room_impulse_response(round(float(rng.uniform(*s.rt60_s)), 2), sample_rate, TRAIN_ROOMS + i)[: int(IR_SECONDS * sample_rate)]
                      for i in range(s.rir_bank)] if s.reverb_p > 0 else []

    @classmethod
    def from_dir(cls, s: AugmentSettings, sample_rate: int, root: Path, seed: int = 0) -> Augmenter:
        """With the recordings of ``s.background_dir`` (relative to ``root``); none, with a note, when it is missing or empty."""
        folder = Path(s.background_dir) if s.background_dir else None
        if folder is not None and not folder.is_absolute():
            folder = root / folder
        recordings = D.load_background(folder, sample_rate) if folder is not None and D.background_files(folder) else []
        if not recordings and s.noise_p > 0 and s.background_share > 0:
            print(f"augment: no background recordings in {folder} (bench/fetch_background.py fetches them): synthetic noise only",
                  file=sys.stderr)
        return cls(s, sample_rate, recordings, seed)

    def margin(self, n: int) -> int:
        """Samples of source audio a view of ``n`` samples needs: room for the slowest speed plus a quarter second of echo."""
        return int(np.ceil(n * (1 + self.s.speed_max) / (1 - self.s.speed_max))) + self.sr // 4

    def __call__(self, wave: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        s, sr = self.s, self.sr
        x = np.asarray(wave, dtype=np.float32)
        if rng.random() < s.speed_p:
            x = D.speed(x, sr, float(rng.uniform(1 - s.speed_max, 1 + s.speed_max)))
        if rng.random() < s.noise_p:
            snr = float(rng.uniform(*s.snr_db))
            if self.background and rng.random() < s.background_share:
                x = D.add_background(x, self.background, snr, rng)
            else:
                x = D.add_noise(x, snr, str(rng.choice(D.NOISE_COLORS)), rng)
        if self.rooms and rng.random() < s.reverb_p:
            x = D.convolve_ir(x, self.rooms[int(rng.integers(len(self.rooms)))])
        start = max(0, (len(x) - n) // 2)
        x = x[start : start + n]  # the view: the middle, with the echo of what came before it
        if len(x) < n:
            x = np.pad(x, (0, n - len(x)))
        if rng.random() < s.band_p:
            kind = int(rng.integers(3))
            if kind == 0:
                x = D.bandpass(x, sr, 300, min(3400, 0.45 * sr))
            elif kind == 1:
                x = D.lowpass(x, sr, min(float(rng.uniform(*s.lowpass_hz)), 0.45 * sr))
            else:
                x = D.highpass(x, sr, float(rng.uniform(*s.highpass_hz)))
        if rng.random() < s.codec_p:
            codec, values = CODECS[int(rng.integers(len(CODECS)))]
            try:
                x = D.reencode(x, sr, codec, float(rng.choice(values)))
            except ValueError:  # a bitrate this rate's MPEG version lacks: the view goes without
                pass
        return D.gain(x, float(rng.uniform(*s.gain_db)))
