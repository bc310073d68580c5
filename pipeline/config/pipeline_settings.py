"""The settings classes of configs/pipeline.yaml: types and checks only; the values and their comments are in the YAML.
``choices`` (a ClassVar, not a field): the names a str field, or each item of a tuple field, may take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pipeline.config.base import _Invalid
from pipeline.names import DTYPES, TOKENIZER_BACKENDS


@dataclass(frozen=True)
class AudioSettings:
    sample_rate: int
    target_rms_dbfs: float
    peak_ceiling_dbfs: float
    silence_rms_dbfs: float
    resample_quality: str
    flac_subtype: str
    flac_compression_level: float


@dataclass(frozen=True)
class IngestSettings:
    extensions: tuple[str, ...]
    min_seconds: float
    max_seconds: float
    workers: int
    commit_every: int
    commit_seconds: float


@dataclass(frozen=True)
class DemoCatalogSettings:
    tracks: int
    seconds: float
    seed: int
    sample_rate: int
    channels: int
    shared_motif_ratio: float


@dataclass(frozen=True)
class RVQSettings:
    frame_rate: float
    n_mels: int
    stack: int
    n_fft: int
    f_min: float
    f_max: float
    levels: int
    codebook_size: int
    kmeans_iters: int
    max_train_frames: int
    holdout_ratio: float
    seed: int


@dataclass(frozen=True)
class MossSettings:
    model_dir: str | None
    num_quantizers: int | None
    chunk_seconds: float
    batch_size: int
    dtype: str

    choices: ClassVar[dict[str, tuple[str, ...]]] = {"dtype": DTYPES}


@dataclass(frozen=True)
class TokenizeSettings:
    backend: str
    save_format: str
    chunk_seconds: float
    batch_seconds: float

    choices: ClassVar[dict[str, tuple[str, ...]]] = {"backend": TOKENIZER_BACKENDS}


@dataclass(frozen=True)
class DreamSettings:
    """`cloudtune dream`: the MNIST VAE of the spec (configs/pipeline.yaml, section dream)."""

    data_dir: str
    dataset: str
    epochs: int
    batch_size: int
    latent_dim: int
    hidden: int
    lr: float
    out: str
    device: str
    seed: int
    threads: int
    samples: int
    grid_cols: int
    grid_padding: int
    manifold_steps: int
    manifold_span: float


@dataclass(frozen=True)
class CatalogVAESettings:
    """The VAE trained on track embeddings for the 2-D catalog map and outlier scores (section catalog_vae)."""

    hidden: int
    epochs: int
    batch_size: int
    lr: float
    seed: int
    threads: int
    top_outliers: int


@dataclass(frozen=True)
class Wav2Vec2Settings:
    model: str | None
    allow_download: bool
    layer: int | None
    device: str
    dtype: str
    threads: int
    batch_size: int
    max_batch_seconds: float
    cpu_max_batch_seconds: float
    pad_group_norm: bool
    max_seconds: float
    resample_quality: str

    choices: ClassVar[dict[str, tuple[str, ...]]] = {"dtype": DTYPES}


@dataclass(frozen=True)
class ServiceSettings:
    start_timeout_s: float
    request_timeout_s: float
    health_timeout_s: float
    retries: int
    backoff_base_s: float
    backoff_max_s: float
    breaker_max_failures: int
    breaker_reset_s: float
    latency_window: int


@dataclass(frozen=True)
class SearchApiSettings:
    """pipeline.yaml ``search_api``: the HTTP search service of `cloudtune serve` (pipeline/api/)."""

    host: str
    port: int
    workers: int
    device: str
    max_batch: int
    max_wait_ms: float
    queue_size: int
    retry_after_s: int
    max_upload_mb: float
    max_files: int
    min_clip_s: float
    max_clip_s: float
    request_timeout_s: float
    reload_poll_s: float
    embed_concurrency: int
    embed_queue_size: int
    embed_timeout_s: float
    transcribe: bool
    transcribe_concurrency: int
    transcribe_queue_size: int
    transcribe_timeout_s: float
    transcribe_max_s: float
    malloc_arenas: int

    def __post_init__(self):
        for key in ("workers", "max_batch", "queue_size", "max_files", "embed_concurrency", "transcribe_concurrency", "malloc_arenas"):
            if getattr(self, key) < 1:
                raise _Invalid(key, f"expected at least 1, got {getattr(self, key)}")
        if not 0 <= self.port < 65536:
            raise _Invalid("port", f"expected 0-65535, got {self.port}")
        for key in ("max_wait_ms", "retry_after_s", "reload_poll_s", "embed_queue_size", "transcribe_queue_size"):
            if getattr(self, key) < 0:
                raise _Invalid(key, f"expected 0 or more, got {getattr(self, key)}")
        for key in ("max_upload_mb", "min_clip_s", "request_timeout_s", "embed_timeout_s", "transcribe_timeout_s", "transcribe_max_s"):
            if getattr(self, key) <= 0:
                raise _Invalid(key, f"expected above 0, got {getattr(self, key)}")
        if self.max_files > self.queue_size:
            raise _Invalid("max_files", f"expected at most queue_size ({self.queue_size}): a full batch request must fit the queue, got {self.max_files}")
        if self.max_clip_s < self.min_clip_s:
            raise _Invalid("max_clip_s", f"expected at least min_clip_s ({self.min_clip_s}), got {self.max_clip_s}")
