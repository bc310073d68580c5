"""The settings classes of configs/train.yaml and configs/fingerprint.yaml: types and checks only; the values and their
comments are in the YAML.
``choices`` (a ClassVar, not a field): the names a str field, or each item of a tuple field, may take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pipeline.config.base import _Invalid


@dataclass(frozen=True)
class EmbedderSettings:
    embedding_dim: int
    hidden: int
    layers: int
    heads: int
    dropout: float
    max_frames: int
    init_from_codebooks: bool


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    temperature: float
    warmup_ratio: float
    grad_clip: float
    clip_seconds: float
    min_crop: float
    pair_window_s: float | None
    token_dropout: float
    clips_per_track: int
    augment_audio: bool
    degrade_p: float
    val_queries_per_track: int
    num_workers: int
    seed: int
    amp: bool
    ema_decay: float


@dataclass(frozen=True)
class SplitSettings:
    val_ratio: float
    test_ratio: float
    seed: int
    group_by: str | None


@dataclass(frozen=True)
class FingerprintSettings:
    """fingerprint.yaml ``fingerprint``: the fingerprint model and its log-mel input (a checkpoint carries them)."""

    sample_rate: int
    n_fft: int
    hop_length: int
    n_mels: int
    f_min: float
    f_max: float
    segment_s: float
    hop_s: float
    channels: tuple[int, ...]
    dim: int
    head_hidden: int


@dataclass(frozen=True)
class FingerprintInferenceSettings:
    """fingerprint.yaml ``fingerprint_inference``: how a trained fingerprint model runs on the CPU, and its ONNX export (never
    part of a checkpoint: the same model runs either way)."""

    backend: str
    threads: int
    opset: int
    tolerance: float
    hop_s: float | None
    precision: str
    int8_calibration: int
    int8_min_cosine: float
    choices: ClassVar = {"backend": ("torch", "onnx"), "precision": ("float32", "int8")}

    def __post_init__(self):
        if self.hop_s is not None and not self.hop_s > 0:
            raise _Invalid("hop_s", f"expected null (the checkpoint's hop) or a positive number of seconds, got {self.hop_s}")
        if self.threads < 0:
            raise _Invalid("threads", f"expected 0 (ONNX Runtime's default) or more, got {self.threads}")
        if not self.tolerance > 0:
            raise _Invalid("tolerance", f"expected a positive number, got {self.tolerance}")
        if self.int8_calibration < 16:
            raise _Invalid("int8_calibration", f"expected at least 16 segments, got {self.int8_calibration}")
        if not 0 < self.int8_min_cosine <= 1:
            raise _Invalid("int8_min_cosine", f"expected a number in (0, 1], got {self.int8_min_cosine}")


@dataclass(frozen=True)
class FingerprintTrainSettings:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    temperature: float
    warmup_ratio: float
    grad_clip: float
    max_shift: float
    spec_mask_p: float
    spec_mask_frames: int
    spec_mask_bands: int
    val_queries_per_track: int
    max_train_hours: float
    train_catalogs: tuple[str, ...]
    num_workers: int
    seed: int
    amp: bool


@dataclass(frozen=True)
class AugmentSettings:
    """fingerprint.yaml ``augment``: the degradations of a training positive (pipeline/audio/augment.py)."""

    speed_p: float
    speed_max: float
    noise_p: float
    snr_db: tuple[float, ...]
    background_share: float
    background_dir: str | None
    reverb_p: float
    rt60_s: tuple[float, ...]
    rir_bank: int
    band_p: float
    lowpass_hz: tuple[float, ...]
    highpass_hz: tuple[float, ...]
    codec_p: float
    gain_db: tuple[float, ...]
