"""Log-mel features with torch.stft and a Slaney mel filter bank (transformers.audio_utils)."""

from __future__ import annotations

import numpy as np
import torch
from transformers.audio_utils import mel_filter_bank


class LogMel:
    """Log-mel frames grouped into token frames: ``stack`` sub-frames of ``n_mels`` per token frame.

    A token frame ``t`` covers samples ``[t * hop, (t + 1) * hop)`` with ``hop = sample_rate / frame_rate``
    (1920 at 24 kHz and 12.5 Hz, MOSS-Audio-Tokenizer's frame). A partial last frame is dropped.
    """

    def __init__(self, sample_rate: int, frame_rate: float, n_mels: int, stack: int, n_fft: int, f_min: float, f_max: float):
        hop = sample_rate / frame_rate
        if hop != int(hop) or int(hop) % stack:
            raise ValueError(f"rvq: sample_rate/frame_rate = {hop:g} samples must be a whole number divisible by stack={stack}")
        self.sample_rate, self.frame_rate, self.n_mels, self.stack, self.n_fft = sample_rate, frame_rate, n_mels, stack, n_fft
        self.hop = int(hop)
        self.sub_hop = self.hop // stack
        self.window = torch.hann_window(n_fft)
        fb = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=f_min,
                             max_frequency=min(f_max, sample_rate / 2), sampling_rate=sample_rate, norm="slaney", mel_scale="slaney")
        self.filters = torch.from_numpy(fb.T.astype(np.float32))  # [n_mels, n_freq]

    @property
    def dim(self) -> int:
        return self.n_mels * self.stack

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """float32 [samples] at ``sample_rate`` -> float32 [frames, n_mels * stack]."""
        frames = self.num_frames(wave.shape[-1])
        if frames == 0:
            return np.zeros((0, self.dim), np.float32)
        x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
        spec = torch.stft(x, self.n_fft, self.sub_hop, window=self.window, center=True, return_complex=True)
        power = spec.real.square() + spec.imag.square()  # [n_freq, sub_frames]
        logmel = torch.log(torch.clamp(self.filters @ power, min=1e-10))  # [n_mels, sub_frames]
        logmel = logmel[:, : frames * self.stack].reshape(self.n_mels, frames, self.stack)
        return logmel.permute(1, 2, 0).reshape(frames, self.dim).numpy()
