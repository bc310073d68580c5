"""The fingerprint model: a 1 s log-mel segment in, a 128-d unit vector out (after Neural Audio Fingerprint, Chang et al. 2021).

- :class:`LogMelFrontEnd` turns waveforms at ``sample_rate`` into log-mel [B, 1, n_mels, frames] with ``torch.stft`` and a Slaney
  mel filter bank (transformers.audio_utils), limited to ``f_min..f_max``; each segment's log-mel is shifted so its loudest bin is
  0 dB, so the vector does not depend on the level of a clip.
- :class:`SeparableBlock`: a 1x3 convolution along time then a 3x1 along frequency, each with BatchNorm and ReLU, each with
  stride 2 (time stops halving at 1 frame): NAFP's separable convolutions, with fewer channels so the model trains on a CPU.
- :class:`SplitHead`: the last block's channels are split into ``dim`` groups and each group is projected to one output number
  by its own small MLP (NAFP's split projection head); the output is L2-normalized.

The settings (``configs/fingerprint.yaml`` ``fingerprint:``) travel inside every checkpoint: :func:`load_fingerprint` needs no config.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.audio_utils import mel_filter_bank

from pipeline.config import FingerprintSettings

POWER_FLOOR = 1e-10  # mel power below this is taken as this before the log
SILENCE = -12.0  # natural-log units below a segment's loudest bin (about 52 dB): everything quieter is silence


class LogMelFrontEnd(nn.Module):
    def __init__(self, s: FingerprintSettings):
        super().__init__()
        self.n_fft, self.hop_length = s.n_fft, s.hop_length
        fb = mel_filter_bank(num_frequency_bins=s.n_fft // 2 + 1, num_mel_filters=s.n_mels, min_frequency=s.f_min,
                             max_frequency=min(s.f_max, s.sample_rate / 2), sampling_rate=s.sample_rate, norm="slaney", mel_scale="slaney")
        self.register_buffer("filters", torch.from_numpy(fb.T.astype(np.float32)), persistent=False)  # [n_mels, n_freq]
        self.register_buffer("window", torch.hann_window(s.n_fft), persistent=False)
        used = np.flatnonzero(fb.any(axis=1))  # the frequency bins some mel band takes: 300-4000 Hz leaves out the lowest
        self._bins = slice(int(used[0]), int(used[-1]) + 1)
        self._filters_np = np.ascontiguousarray(fb[self._bins].astype(np.float32))  # [used bins, n_mels]
        self._window_np = self.window.numpy().copy()

    def frames(self, samples: int) -> int:
        return samples // self.hop_length + 1  # torch.stft with center=True

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """float32 [B, samples] -> log-mel [B, 1, n_mels, frames], each segment's maximum at 0 (natural log units)."""
        spec = torch.stft(waves.float(), self.n_fft, self.hop_length, window=self.window, center=True, return_complex=True)
        power = spec.real.square() + spec.imag.square()  # [B, n_freq, frames]
        logmel = torch.log(torch.clamp(self.filters @ power, min=POWER_FLOOR))
        logmel = logmel - logmel.amax(dim=(1, 2), keepdim=True)
        return torch.clamp(logmel, min=SILENCE).unsqueeze(1)

    def numpy(self, waves: np.ndarray) -> np.ndarray:
        """:meth:`forward` in NumPy and SciPy's FFT for CPU inference: the same log-mel to float32 rounding (tests/test_fingerprint.py),
        1.06-1.12x the segments/s of ONNX inference with the torch front end (bench/RESULTS.md "int8 inference, and the front end in
        NumPy"). float32 [B, samples] -> [B, 1, n_mels, frames]."""
        import scipy.fft

        pad = self.n_fft // 2  # torch.stft's center=True: reflect-padded by half a window
        x = np.pad(np.asarray(waves, dtype=np.float32), ((0, 0), (pad, pad)), mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(x, self.n_fft, axis=1)[:, :: self.hop_length] * self._window_np  # [B, T, n_fft]
        spec = scipy.fft.rfft(frames, axis=-1)[..., self._bins]
        logmel = np.log(np.maximum((spec.real * spec.real + spec.imag * spec.imag) @ self._filters_np, POWER_FLOOR))  # [B, T, n_mels]
        logmel -= logmel.max(axis=(1, 2), keepdims=True)
        return np.ascontiguousarray(np.maximum(logmel, SILENCE, out=logmel).transpose(0, 2, 1)[:, None])


class SeparableBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, time_stride: int):
        super().__init__()
        self.time = nn.Conv2d(c_in, c_out, (1, 3), stride=(1, time_stride), padding=(0, 1), bias=False)
        self.time_norm = nn.BatchNorm2d(c_out)
        self.freq = nn.Conv2d(c_out, c_out, (3, 1), stride=(2, 1), padding=(1, 0), bias=False)
        self.freq_norm = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.time_norm(self.time(x)))
        return F.relu(self.freq_norm(self.freq(x)))


class SplitHead(nn.Module):
    """[B, channels] -> [B, dim]: ``dim`` groups of channels/dim numbers, each through its own Linear-ELU-Linear to one number."""

    def __init__(self, channels: int, dim: int, hidden: int):
        super().__init__()
        if channels % dim:
            raise ValueError(f"fingerprint: the last of fingerprint.channels ({channels}) must divide into dim={dim} groups")
        self.dim, self.group = dim, channels // dim
        # dim Linears side by side, kept as grouped 1x1 convolutions: their weights' shapes are those of every checkpoint
        self.first = nn.Conv1d(channels, dim * hidden, 1, groups=dim)
        self.second = nn.Conv1d(dim * hidden, dim, 1, groups=dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """The grouped convolutions' weights applied as ``dim`` batched matrix products: the same numbers (to 1e-6), and on the
        2-core CPU forward and backward 8x faster than the grouped convolutions (60 -> 7 ms for 256 rows), whose backward
        oneDNN runs group by group."""
        b = h.shape[0]
        x = h.reshape(b, self.dim, self.group).transpose(0, 1)  # [dim, B, group]
        w1 = self.first.weight.view(self.dim, -1, self.group).transpose(1, 2)  # [dim, group, hidden]
        x = F.elu(torch.baddbmm(self.first.bias.view(self.dim, 1, -1), x, w1))  # [dim, B, hidden]
        w2 = self.second.weight.view(self.dim, 1, -1).transpose(1, 2)  # [dim, hidden, 1]
        return torch.baddbmm(self.second.bias.view(self.dim, 1, 1), x, w2).squeeze(-1).T  # [B, dim]


class FingerprintNet(nn.Module):
    def __init__(self, s: FingerprintSettings):
        super().__init__()
        self.settings = s
        self.front = LogMelFrontEnd(s)
        frames, bands = self.front.frames(round(s.segment_s * s.sample_rate)), s.n_mels
        blocks, c_in = [], 1
        for c in s.channels:
            blocks.append(SeparableBlock(c_in, c, 2 if frames > 1 else 1))
            frames, bands, c_in = (frames + 1) // 2 if frames > 1 else 1, (bands + 1) // 2, c
        self.blocks = nn.Sequential(*blocks)
        self.head = SplitHead(c_in, s.dim, s.head_hidden)

    @property
    def segment_samples(self) -> int:
        return round(self.settings.segment_s * self.settings.sample_rate)

    def encode(self, logmel: torch.Tensor) -> torch.Tensor:
        """log-mel [B, 1, n_mels, frames] -> unit vectors [B, dim] (training masks the log-mel in between)."""
        h = self.blocks(logmel).amax(dim=(2, 3))  # what is left of frequency and time pooled by its maximum
        return F.normalize(self.head(h), dim=-1)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """float32 [B, segment samples] at ``settings.sample_rate`` -> unit vectors [B, dim]."""
        return self.encode(self.front(waves))


def for_inference(model: FingerprintNet) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model`` (in eval mode) traced, frozen and optimized for CPU inference: BatchNorm folded into the convolutions, which run
    fused with their ReLU in MKL-DNN layouts; about twice as fast on this CPU (bench/RESULTS.md), the same vectors to 1e-6
    (tests/test_fingerprint.py). TorchScript is deprecated in favour of ``torch.compile``, which takes minutes to compile this
    model on 2 cores and gains less, so this keeps TorchScript while the pinned torch has it, and the eager model when it fails."""
    example = torch.zeros(2, model.segment_samples)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model.eval(), example)))
    except Exception as exc:  # a torch without TorchScript, or an op it cannot trace: the eager model does the same work
        print(f"fingerprint: eager inference ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})", file=sys.stderr)
        return model


def save_fingerprint(path: str | Path, model: FingerprintNet, **extra) -> None:
    """The weights with the settings that built them (``extra``: training state, history)."""
    torch.save({"fingerprint": asdict(model.settings), "model": model.state_dict(), **extra}, path)


def read_checkpoint(path: str | Path) -> dict:
    """A fingerprint checkpoint's dict (weights, settings, training state, ``train_tracks``); a clear error for a file that is
    not one."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as exc:  # a truncated or foreign file: torch raises many kinds
        raise ValueError(f"{path}: not a readable fingerprint checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict) or "fingerprint" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path}: not a fingerprint checkpoint (no fingerprint settings or weights in it)")
    return ckpt


def load_fingerprint(path: str | Path, device: str = "cpu") -> tuple[FingerprintNet, dict]:
    """The model of a checkpoint, in eval mode on ``device``, and the checkpoint dict; a clear error for a file that is not one."""
    ckpt = read_checkpoint(path)
    s = ckpt["fingerprint"]
    model = FingerprintNet(FingerprintSettings(**{**s, "channels": tuple(s["channels"])}))
    model.load_state_dict(ckpt.get("ema_model") or ckpt["model"])
    return model.to(device).eval(), ckpt
