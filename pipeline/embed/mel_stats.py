"""``mel-stats``: the trivial baseline every learned embedder must beat.

The mean and standard deviation over time of a 64-band log-mel spectrogram, concatenated and
L2-normalized (128 numbers). No training, no model: it knows a track's average timbre and loudness
contour, nothing about its melody or rhythm.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline.audio.features import LogMel
from pipeline.embed import l2_normalize


class MelStatsEmbedder:
    name = "mel-stats"

    def __init__(self, sample_rate: int, n_mels: int = 64, frame_rate: float = 50.0, n_fft: int = 1024):
        self.sample_rate, self.n_mels, self.frame_rate = sample_rate, n_mels, frame_rate
        self.features = LogMel(sample_rate, frame_rate, n_mels, stack=1, n_fft=n_fft, f_min=20.0, f_max=12000.0)
        self.dim = 2 * n_mels

    def embed(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(waves), self.dim), np.float32)
        for i, wave in enumerate(waves):
            mel = self.features(wave)
            if len(mel):
                out[i] = np.concatenate([mel.mean(0), mel.std(0)])
        return l2_normalize(out)

    def manifest(self) -> dict:
        return {"name": self.name, "dim": self.dim, "sample_rate": self.sample_rate, "n_mels": self.n_mels, "frame_rate": self.frame_rate,
                "version": f"mel-stats-{self.n_mels}x{self.frame_rate:g}"}
