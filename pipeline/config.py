"""Configuration: ``configs/*.yaml`` hold every default, each with its comment; the settings classes here hold the
types (and the checks) only, never a second copy of a value (STYLE.md section 5).

Five files, one settings class per section, every section name unique across the files:

- ``pipeline.yaml``: audio, ingest, demo_catalog, tokenize, rvq, moss, dream, catalog_vae, wav2vec2, service
- ``train.yaml``: embedder, training, splits
- ``index.yaml``: segments, hnsw, ivfpq, search, publish
- ``eval.yaml``: queries, metrics, latency, evaluation
- ``airflow.yaml``: dag, pools, nightly, run, demo, metrics_page

Where a value comes from, the later winning:

1. ``configs/<name>.yaml``, which must give every key of every section;
2. a partial file (``path``, e.g. ``cloudtune train embedder --config my.yaml``), deep-merged over it;
3. the environment: ``CLOUDTUNE__<SECTION>__<KEY>=value`` (the value parsed as YAML), the one scheme for all five files;
4. what a caller passes to :func:`section` or :func:`defaults` (CLI flags, DAG params), ``None`` meaning "keep".

An unknown section or key, a missing key or an ill-typed value is a one-line :class:`ConfigError` that names where it
came from (file or variable), the section and the key. The retired per-file prefixes (``CLOUDTUNE_TRAIN__`` ...) are an
error naming the variable to use instead, never silently ignored.

Not overrides (read by themselves): ``CLOUDTUNE_HOME`` (artifact root, :mod:`pipeline.paths`), ``CLOUDTUNE_DB_URL``
(metrics DB, default ``sqlite:///$CLOUDTUNE_HOME/cloudtune.db``), ``CLOUDTUNE_CONFIG_DIR`` (where the YAML files live,
default the repository's ``configs/``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from pipeline import paths
from pipeline.names import DEVICES, DTYPES, EMBEDDERS, INDEX_KINDS, IVF_REFINES, MERIT_AGGREGATES, MERIT_METRICS, TOKENIZER_BACKENDS, degradation_steps

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENV_PREFIX = "CLOUDTUNE__"
OLD_ENV_PREFIXES = {"CLOUDTUNE_TRAIN__": "train", "CLOUDTUNE_INDEX__": "index", "CLOUDTUNE_EVAL__": "eval", "CLOUDTUNE_AIRFLOW__": "airflow"}
RENAMED_SECTIONS = {("eval", "run"): "evaluation"}  # (file, old section) -> section: named in the error for an old variable


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the file/variable, section and key."""


class _Invalid(ValueError):
    """What is wrong with a part of a value, ``path`` naming the part (``.demo.sets.pink0db`` below a key; a check across the keys
    of a section, in its ``__post_init__``, starts it with the key: ``plan``); :func:`_build` turns it into the ConfigError that
    names the file, section and key."""

    def __init__(self, path: str, problem: str):
        super().__init__(problem)
        self.path, self.problem = path, problem


def config_dir() -> Path:
    return Path(os.environ.get("CLOUDTUNE_CONFIG_DIR", PROJECT_ROOT / "configs"))


def config_file(name: str) -> Path:
    """The shipped ``configs/<name>.yaml`` (under ``CLOUDTUNE_CONFIG_DIR`` when set)."""
    return config_dir() / f"{name}.yaml"


def db_url() -> str:
    return os.environ.get("CLOUDTUNE_DB_URL") or f"sqlite:///{paths.db_file()}"


def sql_dir() -> Path:
    return PROJECT_ROOT / "sql"


# --- settings classes: types and checks only; the values are in configs/*.yaml -----------------------
# ``choices`` (a ClassVar, not a field): the names a str field, or each item of a tuple field, may take.


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


@dataclass(frozen=True)
class SplitSettings:
    val_ratio: float
    test_ratio: float
    seed: int
    group_by: str | None


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


# --- configs/index.yaml and configs/eval.yaml ---------------------------------------------------


@dataclass(frozen=True)
class SegmentSettings:
    window_s: float
    hop_s: float
    min_s: float
    batch_size: int


@dataclass(frozen=True)
class HNSWSettings:
    m: int
    ef_construction: int
    ef_search: int


@dataclass(frozen=True)
class IVFPQSettings:
    nlist_per_sqrt_n: float
    m: int
    nbits: int
    nprobe: int
    train_per_list: int
    kmeans_iters: int
    refine: str
    refine_k_factor: float

    choices: ClassVar[dict[str, tuple[str, ...]]] = {"refine": IVF_REFINES}

    def __post_init__(self):
        if self.train_per_list < 39:
            raise _Invalid("train_per_list", f"expected at least 39 (FAISS's minimum of training points per list), got {self.train_per_list}")
        if self.kmeans_iters < 1:
            raise _Invalid("kmeans_iters", f"expected at least 1, got {self.kmeans_iters}")
        if self.refine_k_factor < 1:
            raise _Invalid("refine_k_factor", f"expected at least 1 (the shortlist is k * refine_k_factor), got {self.refine_k_factor}")


@dataclass(frozen=True)
class SearchSettings:
    """index.yaml ``search``: the depth of the FAISS search and the sequence matcher's settings (pipeline/index/match.py)."""

    segments_k: int
    match_k: int
    match_drift: int
    rates: tuple[float, ...]
    top_k: int

    def __post_init__(self):
        for key in ("segments_k", "match_k", "top_k"):
            if getattr(self, key) < 1:
                raise _Invalid(key, f"expected at least 1, got {getattr(self, key)}")
        if self.match_drift < 0:
            raise _Invalid("match_drift", f"expected 0 or more segments, got {self.match_drift}")
        if not self.rates or any(r <= 0 for r in self.rates):
            raise _Invalid("rates", f"expected one or more playback rates above 0, got {list(self.rates)}")


@dataclass(frozen=True)
class PublishSettings:
    """index.yaml ``publish``: the criterion by which a run's embedder and index kind are chosen (pipeline/evaluate/merit.py)."""

    metric: str
    k: int
    length_s: float
    aggregate: str
    include_clean: bool
    index_kinds: tuple[str, ...]

    choices: ClassVar[dict[str, tuple[str, ...]]] = {"metric": MERIT_METRICS, "aggregate": MERIT_AGGREGATES, "index_kinds": INDEX_KINDS}


@dataclass(frozen=True)
class QueryPlan:
    """One of eval.yaml ``queries.plans``: the query clip lengths and the degradation sets, set name -> spec
    (:func:`pipeline.names.degradation_steps` checks each spec here; :mod:`pipeline.audio.degrade` applies it)."""

    lengths_s: tuple[float, ...]
    sets: dict[str, str]

    def __post_init__(self):
        if not self.lengths_s or any(length <= 0 for length in self.lengths_s):
            raise _Invalid(".lengths_s", f"expected one or more lengths in seconds above 0, got {list(self.lengths_s)}")
        if not self.sets:
            raise _Invalid(".sets", "expected one or more sets, name: spec")
        for name, spec in self.sets.items():
            if not name or "/" in name or name != name.strip() or " " in name:
                raise _Invalid(f".sets.{name}", "a set name is one word without '/' (query sets are named <length>s/<name>)")
            try:
                degradation_steps(spec)
            except ValueError as exc:
                raise _Invalid(f".sets.{name}", str(exc)) from None


@dataclass(frozen=True)
class QuerySettings:
    split: str
    per_track: int
    seed: int
    plan: str
    plans: dict[str, QueryPlan]
    background_dir: str

    def __post_init__(self):
        if self.plan not in self.plans:
            raise _Invalid("plan", f"{self.plan!r} is not one of the plans {', '.join(self.plans)}")

    @property
    def query_plan(self) -> QueryPlan:
        """The selected plan."""
        return self.plans[self.plan]


@dataclass(frozen=True)
class EvalMetricSettings:
    recall_k: tuple[int, ...]


@dataclass(frozen=True)
class LatencySettings:
    length_s: float
    single_queries: int
    batch_size: int


@dataclass(frozen=True)
class EvaluationSettings:
    """eval.yaml ``evaluation``: what a run evaluates (``run`` until the sections became unique across the files)."""

    embedders: tuple[str, ...]
    index_kinds: tuple[str, ...]
    distractors: tuple[str, ...]
    catalog_vae: bool

    choices: ClassVar[dict[str, tuple[str, ...]]] = {"embedders": EMBEDDERS, "index_kinds": INDEX_KINDS}


# --- configs/airflow.yaml -----------------------------------------------------------------------


@dataclass(frozen=True)
class DagSettings:
    catalog: str
    catalog_roots: tuple[str, ...]
    tokenizer_backend: str
    epochs: int
    embedding_dim: int
    fingerprint_epochs: int
    embedders: tuple[str, ...]
    index_kinds: tuple[str, ...]
    distractors: tuple[str, ...]
    device: str
    max_shards: int
    min_tracks_per_shard: int
    retries: int
    retry_delay_s: float

    choices: ClassVar[dict[str, tuple[str, ...]]] = {"tokenizer_backend": TOKENIZER_BACKENDS, "embedders": EMBEDDERS, "index_kinds": INDEX_KINDS,
                                                     "device": DEVICES}


@dataclass(frozen=True)
class PoolSettings:
    gpu: str


@dataclass(frozen=True)
class NightlySettings:
    schedule: str
    metric_k: int
    max_recall_drop: float


@dataclass(frozen=True)
class RunDagSettings:
    dag_id: str


@dataclass(frozen=True)
class MetricsPageSettings:
    """airflow.yaml ``metrics_page``: the Airflow UI's "Retrieval metrics" page."""

    fail_below: float


@dataclass(frozen=True)
class DemoRunSettings:
    epochs: int
    embedding_dim: int
    fingerprint_epochs: int
    index_kinds: tuple[str, ...]
    query_plan: str

    choices: ClassVar[dict[str, tuple[str, ...]]] = {"index_kinds": INDEX_KINDS}


# --- the registry: file -> section -> settings class -----------------------------------------------

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
TRAIN_SECTIONS: dict[str, type] = {"embedder": EmbedderSettings, "training": TrainSettings, "splits": SplitSettings}
FINGERPRINT_SECTIONS: dict[str, type] = {"fingerprint": FingerprintSettings, "fingerprint_training": FingerprintTrainSettings, "augment": AugmentSettings}
INDEX_SECTIONS: dict[str, type] = {"segments": SegmentSettings, "hnsw": HNSWSettings, "ivfpq": IVFPQSettings, "search": SearchSettings,
                                   "publish": PublishSettings}
EVAL_SECTIONS: dict[str, type] = {"queries": QuerySettings, "metrics": EvalMetricSettings, "latency": LatencySettings, "evaluation": EvaluationSettings}
AIRFLOW_SECTIONS: dict[str, type] = {"dag": DagSettings, "pools": PoolSettings, "nightly": NightlySettings, "run": RunDagSettings, "demo": DemoRunSettings,
                                     "metrics_page": MetricsPageSettings}

FILES: dict[str, dict[str, type]] = {"pipeline": SECTIONS, "train": TRAIN_SECTIONS, "fingerprint": FINGERPRINT_SECTIONS, "index": INDEX_SECTIONS,
                                     "eval": EVAL_SECTIONS, "airflow": AIRFLOW_SECTIONS}
SECTION_FILE: dict[str, str] = {name: file for file, sections in FILES.items() for name in sections}  # one env scheme needs unique names
HOMES: dict[type, tuple[str, str]] = {cls: (file, name) for file, sections in FILES.items() for name, cls in sections.items()}
if len(SECTION_FILE) != sum(map(len, FILES.values())) or len(HOMES) != len(SECTION_FILE):
    raise RuntimeError("pipeline.config: a section name (or settings class) is used twice across configs/*.yaml")


# --- loading ---------------------------------------------------------------------------------------


def load(name: str = "pipeline", path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``configs/<name>.yaml``, the partial file ``path`` (when given) deep-merged over it, then the environment's
    ``CLOUDTUNE__<SECTION>__<KEY>`` overrides of this file's sections; every section checked against its settings class.
    Returns the merged dict (plain YAML types: what a run stores as its resolved config)."""
    if name not in FILES:
        raise ConfigError(f"config {name!r}: no such config file (known: {', '.join(FILES)})")
    env = os.environ if env is None else env
    check_env(env)
    shipped = config_file(name)
    origin: dict[tuple[str, str], str] = {}  # (section, key) -> the file or variable its value came from
    data: dict[str, dict[str, Any]] = {}
    for source in (shipped, Path(path) if path is not None else None):
        if source is None:
            continue
        layer = _read(source)
        _check_layout(layer, name, source)
        for sec, body in layer.items():
            data.setdefault(sec, {})
            for key, value in (body or {}).items():
                data[sec][key], origin[sec, key] = value, str(source)
    for var, sec, key, value in env_overrides(env):
        if SECTION_FILE[sec] == name:
            data.setdefault(sec, {})[key], origin[sec, key] = value, var
    for sec, cls in FILES[name].items():
        _build(cls, data.get(sec, {}), sec, lambda key, sec=sec: origin.get((sec, key), str(shipped)))
    return data


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def _check_layout(data: dict[str, Any], name: str, where: Path) -> None:
    """Every section of ``data`` is one of file ``name``'s and a mapping; every key in it a field of the section's class."""
    sections = FILES[name]
    for sec, body in data.items():
        if sec not in sections:
            elsewhere = f"; {sec!r} is a section of {SECTION_FILE[sec]}.yaml" if sec in SECTION_FILE else ""
            raise ConfigError(f"{where}: unknown section {sec!r} (known: {', '.join(sections)}){elsewhere}")
        if body is not None and not isinstance(body, dict):
            raise ConfigError(f"{where}: section {sec!r} must be a mapping of keys, got {body!r}")
        known = [f.name for f in fields(sections[sec])]
        for key in body or {}:
            if key not in known:
                raise ConfigError(f"{where}: config {sec}.{key}: unknown key (known: {', '.join(sorted(known))})")


def check_env(env: Mapping[str, str] | None = None) -> None:
    """A variable with a retired per-file prefix is an error naming the one to use instead (it would otherwise do nothing)."""
    env = os.environ if env is None else env
    for var in sorted(env):
        for prefix, file in OLD_ENV_PREFIXES.items():
            if var.startswith(prefix):
                parts = var[len(prefix):].split("__")
                parts[0] = RENAMED_SECTIONS.get((file, parts[0].lower()), parts[0]).upper()
                raise ConfigError(f"{var}: the {prefix} prefix is retired; set {ENV_PREFIX}{'__'.join(parts)} instead "
                                  f"(one scheme for every configs/*.yaml: {ENV_PREFIX}<SECTION>__<KEY>)")


def env_overrides(env: Mapping[str, str] | None = None) -> Iterator[tuple[str, str, str, Any]]:
    """(variable, section, key, parsed value) of every ``CLOUDTUNE__<SECTION>__<KEY>`` variable, whichever file holds
    the section; an unknown section or key is an error."""
    env = os.environ if env is None else env
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in var[len(ENV_PREFIX):].split("__")]
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"{var}: expected {ENV_PREFIX}<SECTION>__<KEY>")
        sec, key = parts
        if sec not in SECTION_FILE:
            raise ConfigError(f"{var}: no config section {sec!r}")
        if key not in {f.name for f in fields(FILES[SECTION_FILE[sec]][sec])}:
            raise ConfigError(f"{var}: unknown config key '{sec}.{key}'")
        try:
            value = yaml.safe_load(env[var])
        except yaml.YAMLError:
            raise ConfigError(f"{var}: value {env[var]!r} is not valid YAML") from None
        yield var, sec, key, value


T = TypeVar("T")


def section(cls: type[T], data: Mapping[str, Any], name: str, **overrides: Any) -> T:
    """Settings class ``cls`` from section ``name`` of a loaded config ``data``, the ``overrides`` winning (``None``: keep).
    Every field needs a value; an unknown, missing or ill-typed key is a ConfigError naming its file, section and key."""
    raw = dict(data.get(name) or {})
    given = {key for key, value in overrides.items() if value is not None}
    raw.update({key: overrides[key] for key in given})
    shipped = str(config_file(HOMES[cls][0])) if cls in HOMES else "config"
    return _build(cls, raw, name, lambda key: "argument" if key in given else shipped)


def defaults(cls: type[T], **overrides: Any) -> T:
    """The configured default of settings class ``cls``: its section of its file (the registry knows both), with the
    environment's overrides, then ``overrides`` (``None``: keep; to set a field to None use ``dataclasses.replace``)."""
    if cls not in HOMES:
        raise TypeError(f"{getattr(cls, '__name__', cls)}: not a settings class of configs/*.yaml")
    file, name = HOMES[cls]
    return section(cls, load(file), name, **overrides)


def _build(cls: type[T], raw: dict[str, Any], name: str, where: Callable[[str], str]) -> T:
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{where(unknown[0])}: config {name}.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
    missing = [key for key in known if key not in raw]
    if missing:
        more = f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise ConfigError(f"{where(missing[0])}: config {name}.{missing[0]}: missing key{more}")
    choices = getattr(cls, "choices", {})
    kwargs = {}
    for key, value in raw.items():
        kind = str(known[key].type)
        try:
            kwargs[key] = value = _typed(kind, value)
        except _Invalid as exc:
            raise ConfigError(f"{where(key)}: config {name}.{key}{exc.path}: {exc.problem}") from None
        except (TypeError, ValueError):
            raise ConfigError(f"{where(key)}: config {name}.{key}: expected {kind}, got {value!r}") from None
        allowed = choices.get(key, ())
        wrong = [item for item in (value if isinstance(value, tuple) else (value,)) if allowed and item not in allowed]
        if wrong:
            raise ConfigError(f"{where(key)}: config {name}.{key}: {wrong[0]!r} is not one of {', '.join(allowed)}")
    try:
        return cls(**kwargs)
    except _Invalid as exc:  # a check across keys (__post_init__; its path starts with the key, e.g. QuerySettings' "plan")
        raise ConfigError(f"{where(exc.path.split('.')[0])}: config {name}.{exc.path}: {exc.problem}") from None


def _typed(kind: str, value: Any) -> Any:
    """``value`` as the annotated type ``kind`` (a string: this module has postponed annotations); raises ValueError."""
    if kind.endswith(" | None"):
        return None if value is None else _typed(kind.removesuffix(" | None"), value)
    if value is None:
        raise ValueError(kind)
    if kind.startswith("dict[str, "):  # a mapping name -> item: a nested settings class (NESTED) or a plain type
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ValueError(kind)
        item = kind.removeprefix("dict[str, ").removesuffix("]")
        return {k: _nested(NESTED[item], v, f".{k}") if item in NESTED else _typed(item, v) for k, v in value.items()}
    if kind.startswith("tuple"):
        if isinstance(value, (str, bytes, dict)) or not isinstance(value, (list, tuple)):
            raise ValueError(kind)
        item = kind.removeprefix("tuple[").removesuffix(", ...]")
        return tuple(_typed(item, v) if item in ("float", "int", "str", "bool") else v for v in value)
    if kind == "float":
        return float(value)
    if kind == "int":
        if isinstance(value, bool) or float(value) != int(value):
            raise ValueError(kind)
        return int(value)
    if kind == "str":
        return str(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(kind)
    return value


NESTED: dict[str, type] = {"QueryPlan": QueryPlan}  # settings classes that are items of a mapping-valued key


def _nested(cls: type[T], value: Any, path: str) -> T:
    """Settings class ``cls`` from the mapping ``value`` found at ``path`` below a key; every field needed, none unknown."""
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    if not isinstance(value, dict):
        raise _Invalid(path, f"expected a mapping of {', '.join(known)}, got {value!r}")
    unknown, missing = sorted(set(value) - set(known)), [k for k in known if k not in value]
    if unknown or missing:
        raise _Invalid(f"{path}.{(unknown or missing)[0]}", "unknown key" if unknown else "missing key")
    kwargs = {}
    for key, item in value.items():
        kind = str(known[key].type)
        try:
            kwargs[key] = _typed(kind, item)
        except _Invalid as exc:
            raise _Invalid(f"{path}.{key}{exc.path}", exc.problem) from None
        except (TypeError, ValueError):
            raise _Invalid(f"{path}.{key}", f"expected {kind}, got {item!r}") from None
    try:
        return cls(**kwargs)
    except _Invalid as exc:
        raise _Invalid(f"{path}{exc.path}", exc.problem) from None


# --- typed loaders: {section: settings} of one file, read as s["segments"] or s.segments -----------------


class Sections(dict):
    """The settings of one config file as {section: settings}; a section reads as ``s["segments"]`` or ``s.segments``.
    ``raw`` is the merged dict they were built from (what a run stores as its resolved config)."""

    def __init__(self, settings: dict[str, Any], raw: dict[str, Any]):
        super().__init__(settings)
        self.raw = raw

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no section {name!r} (sections: {', '.join(self)})") from None


class PipelineConfig(Sections):
    audio: AudioSettings
    ingest: IngestSettings
    demo_catalog: DemoCatalogSettings
    tokenize: TokenizeSettings
    rvq: RVQSettings
    moss: MossSettings
    dream: DreamSettings
    catalog_vae: CatalogVAESettings
    wav2vec2: Wav2Vec2Settings
    service: ServiceSettings


class TrainConfig(Sections):
    embedder: EmbedderSettings
    training: TrainSettings
    splits: SplitSettings


class FingerprintConfig(Sections):
    fingerprint: FingerprintSettings
    fingerprint_training: FingerprintTrainSettings
    augment: AugmentSettings


class IndexConfig(Sections):
    segments: SegmentSettings
    hnsw: HNSWSettings
    ivfpq: IVFPQSettings
    search: SearchSettings
    publish: PublishSettings


class EvalConfig(Sections):
    queries: QuerySettings
    metrics: EvalMetricSettings
    latency: LatencySettings
    evaluation: EvaluationSettings


class AirflowConfig(Sections):
    dag: DagSettings
    pools: PoolSettings
    nightly: NightlySettings
    run: RunDagSettings
    demo: DemoRunSettings
    metrics_page: MetricsPageSettings


S = TypeVar("S", bound=Sections)


def _typed_file(kind: type[S], name: str, path: str | os.PathLike | None) -> S:
    data = load(name, path=path)
    return kind({sec: section(cls, data, sec) for sec, cls in FILES[name].items()}, data)


def load_pipeline(path: str | os.PathLike | None = None) -> PipelineConfig:
    return _typed_file(PipelineConfig, "pipeline", path)


def load_train(path: str | os.PathLike | None = None) -> TrainConfig:
    """configs/train.yaml (``path``: a partial file merged over it): ``.embedder``, ``.training``, ``.splits`` and ``.raw``."""
    return _typed_file(TrainConfig, "train", path)


def load_fingerprint(path: str | os.PathLike | None = None) -> FingerprintConfig:
    """configs/fingerprint.yaml (``path``: a partial file merged over it): ``.fingerprint``, ``.fingerprint_training``, ``.augment``."""
    return _typed_file(FingerprintConfig, "fingerprint", path)


def load_index(path: str | os.PathLike | None = None) -> IndexConfig:
    return _typed_file(IndexConfig, "index", path)


def load_eval(path: str | os.PathLike | None = None) -> EvalConfig:
    return _typed_file(EvalConfig, "eval", path)


def load_airflow(path: str | os.PathLike | None = None) -> AirflowConfig:
    """configs/airflow.yaml. Light (PyYAML): the DAG files call it at parse time."""
    return _typed_file(AirflowConfig, "airflow", path)


def validate(data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load and check every config file (or check the given pipeline.yaml dict), so a typo fails any command at once;
    returns pipeline.yaml's dict."""
    if data is None:
        for name in FILES:
            if name != "pipeline":
                load(name)
        data = load()
    for name, cls in SECTIONS.items():
        section(cls, data, name)
    return data
