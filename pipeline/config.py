"""Configuration: YAML files under configs/ hold every default; the environment overrides them.

- ``CLOUDTUNE_HOME``: artifact root (default ``./var``).
- ``CLOUDTUNE_DB_URL``: metrics database (default ``sqlite:///$CLOUDTUNE_HOME/cloudtune.db``).
- ``CLOUDTUNE_CONFIG_DIR``: where the YAML files live (default: the repository's ``configs/``).
- ``CLOUDTUNE__<SECTION>__<KEY>=value``: overrides one key of ``pipeline.yaml``; the value is parsed as YAML.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pipeline import paths

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENV_PREFIX = "CLOUDTUNE__"


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the file/key."""


def config_dir() -> Path:
    return Path(os.environ.get("CLOUDTUNE_CONFIG_DIR", PROJECT_ROOT / "configs"))


def db_url() -> str:
    return os.environ.get("CLOUDTUNE_DB_URL") or f"sqlite:///{paths.db_file()}"


def sql_dir() -> Path:
    return PROJECT_ROOT / "sql"


def load(name: str = "pipeline", env: dict[str, str] | None = None, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read ``configs/<name>.yaml`` (or ``path``) and apply environment overrides:
    ``CLOUDTUNE__SECTION__KEY`` for pipeline.yaml, ``CLOUDTUNE_<NAME>__SECTION__KEY`` for the others."""
    path = Path(path) if path else config_dir() / f"{name}.yaml"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    prefix = ENV_PREFIX if name == "pipeline" else f"CLOUDTUNE_{name.upper()}__"
    return apply_env_overrides(data, os.environ if env is None else env, prefix)


def apply_env_overrides(data: dict[str, Any], env: dict[str, str], prefix: str = ENV_PREFIX) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for var, raw in sorted(env.items()):
        if not var.startswith(prefix):
            continue
        keys = [k.lower() for k in var[len(prefix):].split("__")]
        node = out
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                raise ConfigError(f"{var}: no config section {'.'.join(keys[:-1])!r}")
            node = node[key]
        if keys[-1] not in node:
            raise ConfigError(f"{var}: unknown config key {'.'.join(keys)!r}")
        try:
            node[keys[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"{var}: value {raw!r} is not valid YAML") from None
    return out


T = TypeVar("T")


def section(cls: type[T], data: dict[str, Any], name: str, **overrides: Any) -> T:
    """Build a settings dataclass from one config section; unknown or ill-typed keys are errors."""
    raw = dict(data.get(name) or {})
    raw.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"config {name}.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
    kwargs = {}
    for key, value in raw.items():
        kind = str(known[key].type)
        if value is None and kind.endswith("| None"):
            kwargs[key] = None
            continue
        kind = kind.removesuffix(" | None")
        try:
            if kind == "float":
                value = float(value)
            elif kind == "int":
                if isinstance(value, bool) or float(value) != int(value):
                    raise ValueError
                value = int(value)
            elif kind == "str":
                value = str(value)
            elif kind == "bool":
                if not isinstance(value, bool):
                    raise ValueError
            elif kind.startswith("tuple"):
                value = tuple(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config {name}.{key}: expected {kind}, got {value!r}") from None
        kwargs[key] = value
    return cls(**kwargs)


@dataclass(frozen=True)
class AudioSettings:
    sample_rate: int = 24000
    target_rms_dbfs: float = -20.0
    peak_ceiling_dbfs: float = -1.0
    silence_rms_dbfs: float = -90.0
    resample_quality: str = "HQ"
    flac_subtype: str = "PCM_16"
    flac_compression_level: float = 0.0


@dataclass(frozen=True)
class IngestSettings:
    extensions: tuple = ("wav", "flac", "ogg", "oga", "mp3")
    min_seconds: float = 0.5
    max_seconds: float = 1800.0
    workers: int = 0
    commit_every: int = 64


@dataclass(frozen=True)
class DemoCatalogSettings:
    tracks: int = 24
    seconds: float = 30.0
    seed: int = 0
    sample_rate: int = 44100
    channels: int = 2
    shared_motif_ratio: float = 0.5


@dataclass(frozen=True)
class RVQSettings:
    frame_rate: float = 12.5  # token frames per second (MOSS-Audio-Tokenizer: 12.5)
    n_mels: int = 64
    stack: int = 2  # log-mel sub-frames per token frame
    n_fft: int = 1024
    f_min: float = 20.0
    f_max: float = 12000.0
    levels: int = 8
    codebook_size: int = 1024
    kmeans_iters: int = 20
    max_train_frames: int = 262144
    holdout_ratio: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class MossSettings:
    model_dir: str | None = None
    num_quantizers: int | None = None
    chunk_seconds: float = 8.0
    batch_size: int = 8
    dtype: str = "auto"


@dataclass(frozen=True)
class TokenizeSettings:
    backend: str = "rvq"
    save_format: str = "npz"
    chunk_seconds: float = 0.0
    batch_seconds: float = 600.0


@dataclass(frozen=True)
class EmbedderSettings:
    embedding_dim: int = 256
    hidden: int = 256
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    max_frames: int = 256
    init_from_codebooks: bool = True


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    temperature: float = 0.07
    warmup_ratio: float = 0.05
    grad_clip: float = 1.0
    clip_seconds: float = 5.0
    min_crop: float = 0.6
    pair_window_s: float | None = 2.5
    token_dropout: float = 0.1
    clips_per_track: int = 32
    augment_audio: bool = True
    degrade_p: float = 0.5
    val_queries_per_track: int = 128
    num_workers: int = 1
    seed: int = 0
    amp: bool = True
    ema_decay: float = 0.98


@dataclass(frozen=True)
class SplitSettings:
    val_ratio: float = 0.1
    test_ratio: float = 0.1
    seed: int = 42
    group_by: str | None = None


@dataclass(frozen=True)
class DreamSettings:
    """`cloudtune dream`: the MNIST VAE of the spec (defaults: configs/pipeline.yaml, section dream)."""

    data_dir: str = "./data"
    dataset: str = "mnist"
    epochs: int = 10
    batch_size: int = 128
    latent_dim: int = 2
    hidden: int = 400
    lr: float = 1e-3
    out: str = "dreams/dream_sample.png"
    device: str = "auto"
    seed: int = 0
    threads: int = 0
    samples: int = 64
    grid_cols: int = 8
    grid_padding: int = 2
    manifold_steps: int = 20
    manifold_span: float = 3.0


@dataclass(frozen=True)
class CatalogVAESettings:
    """The VAE trained on track embeddings for the 2-D catalog map and outlier scores (section catalog_vae)."""

    hidden: int = 128
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    threads: int = 1
    top_outliers: int = 10


@dataclass(frozen=True)
class Wav2Vec2Settings:
    model: str | None = None
    allow_download: bool = False
    layer: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    threads: int = 0
    batch_size: int = 8
    max_batch_seconds: float = 80.0
    cpu_max_batch_seconds: float = 10.0
    pad_group_norm: bool = False
    max_seconds: float = 600.0
    resample_quality: str = "HQ"


@dataclass(frozen=True)
class ServiceSettings:
    start_timeout_s: float = 120.0
    request_timeout_s: float = 60.0
    health_timeout_s: float = 5.0
    retries: int = 2
    backoff_base_s: float = 0.2
    backoff_max_s: float = 5.0
    breaker_max_failures: int = 5
    breaker_reset_s: float = 30.0
    latency_window: int = 1000


TRAIN_SECTIONS: dict[str, type] = {"embedder": EmbedderSettings, "training": TrainSettings, "splits": SplitSettings}

SECTIONS: dict[str, type] = {
    "audio": AudioSettings,
    "ingest": IngestSettings,
    "demo_catalog": DemoCatalogSettings,
    "tokenize": TokenizeSettings,
    "rvq": RVQSettings,
    "moss": MossSettings,
    "dream": DreamSettings,
    "catalog_vae": CatalogVAESettings,
    "wav2vec2": Wav2Vec2Settings,
    "service": ServiceSettings,
}


def validate(data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load (unless given) and check every known section, so a typo fails any command at once."""
    data = load() if data is None else data
    for name, cls in SECTIONS.items():
        section(cls, data, name)
    return data


def load_train(path: str | os.PathLike | None = None) -> tuple[EmbedderSettings, TrainSettings, SplitSettings, dict[str, Any]]:
    """configs/train.yaml (or ``path``) with CLOUDTUNE_TRAIN__ overrides, as checked settings + the raw dict."""
    data = load("train", path=path)
    unknown = sorted(set(data) - set(TRAIN_SECTIONS))
    if unknown:
        raise ConfigError(f"{path or config_dir() / 'train.yaml'}: unknown section {unknown[0]!r} (known: {', '.join(TRAIN_SECTIONS)})")
    return (section(EmbedderSettings, data, "embedder"), section(TrainSettings, data, "training"), section(SplitSettings, data, "splits"), data)


# --- configs/index.yaml and configs/eval.yaml ---------------------------------------------------


@dataclass(frozen=True)
class SegmentSettings:
    window_s: float = 5.0
    hop_s: float = 1.0
    min_s: float = 1.0
    batch_size: int = 64


@dataclass(frozen=True)
class HNSWSettings:
    m: int = 32
    ef_construction: int = 200
    ef_search: int = 128


@dataclass(frozen=True)
class IVFPQSettings:
    nlist_per_sqrt_n: float = 8.0
    m: int = 32
    nbits: int = 8
    nprobe: int = 16


@dataclass(frozen=True)
class SearchSettings:
    segments_k: int = 1000
    top_k: int = 10


@dataclass(frozen=True)
class PublishSettings:
    embedder: str = "contrastive"
    index_kind: str = "hnsw"


@dataclass(frozen=True)
class QuerySettings:
    split: str = "test"
    lengths_s: tuple[float, ...] = (2.0, 5.0)
    per_track: int = 10
    degradations: tuple[str, ...] = ("clean", "white20db", "white10db", "white0db", "pink0db", "lowpass3k", "telephone", "gain-12db", "speed0.97",
                                     "speed1.03", "reverb")
    seed: int = 1234


@dataclass(frozen=True)
class EvalMetricSettings:
    recall_k: tuple[int, ...] = (1, 10, 100)


@dataclass(frozen=True)
class LatencySettings:
    single_queries: int = 100
    batch_size: int = 256


@dataclass(frozen=True)
class EvalRunSettings:
    embedders: tuple[str, ...] = ("mel-stats", "contrastive")
    index_kinds: tuple[str, ...] = ("flat", "hnsw", "ivfpq")
    catalog_vae: bool = True


INDEX_SECTIONS: dict[str, type] = {"segments": SegmentSettings, "hnsw": HNSWSettings, "ivfpq": IVFPQSettings, "search": SearchSettings,
                                   "publish": PublishSettings}
EVAL_SECTIONS: dict[str, type] = {"queries": QuerySettings, "metrics": EvalMetricSettings, "latency": LatencySettings, "run": EvalRunSettings}


def load_sections(name: str, sections: dict[str, type], path: str | os.PathLike | None = None) -> dict[str, Any]:
    """``configs/<name>.yaml`` (with ``CLOUDTUNE_<NAME>__`` overrides) as {section: settings}; unknown sections are errors."""
    data = load(name, path=path)
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ConfigError(f"{path or config_dir() / f'{name}.yaml'}: unknown section {unknown[0]!r} (known: {', '.join(sections)})")
    return {key: section(cls, data, key) for key, cls in sections.items()}


def load_index(path: str | os.PathLike | None = None) -> dict[str, Any]:
    return load_sections("index", INDEX_SECTIONS, path)


def load_eval(path: str | os.PathLike | None = None) -> dict[str, Any]:
    out = load_sections("eval", EVAL_SECTIONS, path)
    from pipeline.audio.degrade import QUERY_DEGRADATIONS

    for name in out["queries"].degradations:
        if name not in QUERY_DEGRADATIONS:
            raise ConfigError(f"config queries.degradations: unknown degradation {name!r} (known: {', '.join(QUERY_DEGRADATIONS)})")
    return out


# --- configs/airflow.yaml -----------------------------------------------------------------------


@dataclass(frozen=True)
class DagSettings:
    catalog: str = "default"
    catalog_roots: tuple[str, ...] = ()
    tokenizer_backend: str = "rvq"
    epochs: int = 10
    embedding_dim: int = 256
    embedders: tuple[str, ...] = ("mel-stats", "contrastive", "wav2vec2")
    index_kinds: tuple[str, ...] = ("flat", "hnsw", "ivfpq")
    device: str = "auto"
    max_shards: int = 4
    min_tracks_per_shard: int = 16
    retries: int = 2
    retry_delay_s: float = 60.0


@dataclass(frozen=True)
class PoolSettings:
    gpu: str = "gpu"


@dataclass(frozen=True)
class NightlySettings:
    schedule: str = "0 3 * * *"
    metric_k: int = 10
    max_recall_drop: float = 0.05


@dataclass(frozen=True)
class RunDagSettings:
    dag_id: str = "audio_retrieval"


@dataclass(frozen=True)
class DemoRunSettings:
    epochs: int = 2
    embedding_dim: int = 128
    index_kinds: tuple[str, ...] = ("flat", "hnsw", "ivfpq")


AIRFLOW_SECTIONS: dict[str, type] = {"dag": DagSettings, "pools": PoolSettings, "nightly": NightlySettings, "run": RunDagSettings, "demo": DemoRunSettings}


def load_airflow(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """configs/airflow.yaml (with CLOUDTUNE_AIRFLOW__ overrides) as {section: settings}. Light: the DAG files call it at parse time."""
    return load_sections("airflow", AIRFLOW_SECTIONS, path)
