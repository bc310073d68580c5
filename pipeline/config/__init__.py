"""Configuration: ``configs/*.yaml`` hold every default, each with its comment; the settings classes here hold the
types (and the checks) only, never a second copy of a value (STYLE.md section 5).

Seven files, one settings class per section, every section name unique across the files; the classes of each file live in
a module of this package (``pipeline_settings`` ... ``airflow_settings``), the loading in ``loader``, and every caller imports
them from ``pipeline.config``:

- ``pipeline.yaml``: audio, ingest, demo_catalog, tokenize, rvq, moss, dream, catalog_vae, wav2vec2, service, search_api
- ``train.yaml``: embedder, training, splits
- ``fingerprint.yaml``: fingerprint, fingerprint_training, augment, fingerprint_inference
- ``index.yaml``: segments, hnsw, ivfpq, search, publish
- ``eval.yaml``: queries, metrics, latency, evaluation
- ``airflow.yaml``: dag, pools, nightly, run, demo, metrics_page, processes, cluster
- ``asr.yaml``: asr, qwen3_asr, pocketsphinx, asr_eval

Where a value comes from, the later winning:

1. ``configs/<name>.yaml``, which must give every key of every section;
2. a partial file (``path``, e.g. ``cloudtune train embedder --config my.yaml``), deep-merged over it;
3. the environment: ``CLOUDTUNE__<SECTION>__<KEY>=value`` (the value parsed as YAML), the one scheme for all seven files;
4. what a caller passes to :func:`section` or :func:`defaults` (CLI flags, DAG params), ``None`` meaning "keep".

An unknown section or key, a missing key or an ill-typed value is a one-line :class:`ConfigError` that names where it
came from (file or variable), the section and the key. The retired per-file prefixes (``CLOUDTUNE_TRAIN__`` ...) are an
error naming the variable to use instead, never silently ignored.

Not overrides (read by themselves): ``CLOUDTUNE_HOME`` (artifact root, :mod:`pipeline.paths`), ``CLOUDTUNE_DB_URL``
(metrics DB, default ``sqlite:///$CLOUDTUNE_HOME/cloudtune.db``), ``CLOUDTUNE_CONFIG_DIR`` (where the YAML files live,
default the repository's ``configs/``).
"""

from __future__ import annotations

from pipeline.config.airflow_settings import (
    ClusterSettings,
    DagSettings,
    DemoRunSettings,
    MetricsPageSettings,
    NightlySettings,
    PoolSettings,
    ProcessSettings,
    RunDagSettings,
)
from pipeline.config.asr_settings import AsrEvalSettings, AsrSettings, PocketsphinxSettings, Qwen3AsrSettings
from pipeline.config.base import ENV_PREFIX, OLD_ENV_PREFIXES, PROJECT_ROOT, RENAMED_SECTIONS, ConfigError, config_dir, config_file, db_url, sql_dir
from pipeline.config.eval_settings import EvalMetricSettings, EvaluationSettings, LatencySettings, QueryPlan, QuerySettings
from pipeline.config.index_settings import HNSWSettings, HubSettings, IVFPQSettings, PublishSettings, SearchSettings, SegmentSettings
from pipeline.config.loader import (
    AIRFLOW_SECTIONS,
    ASR_SECTIONS,
    EVAL_SECTIONS,
    FILES,
    FINGERPRINT_SECTIONS,
    HOMES,
    INDEX_SECTIONS,
    NESTED,
    SECTION_FILE,
    SECTIONS,
    TRAIN_SECTIONS,
    AirflowConfig,
    AsrConfig,
    EvalConfig,
    FingerprintConfig,
    IndexConfig,
    PipelineConfig,
    Sections,
    TrainConfig,
    check_env,
    defaults,
    env_overrides,
    load,
    load_airflow,
    load_asr,
    load_eval,
    load_fingerprint,
    load_index,
    load_pipeline,
    load_train,
    section,
    validate,
)
from pipeline.config.pipeline_settings import (
    AudioSettings,
    CatalogVAESettings,
    DemoCatalogSettings,
    DreamSettings,
    IngestSettings,
    MossSettings,
    RVQSettings,
    SearchApiSettings,
    ServiceSettings,
    TokenizeSettings,
    Wav2Vec2Settings,
)
from pipeline.config.train_settings import (
    AugmentSettings,
    EmbedderSettings,
    FingerprintInferenceSettings,
    FingerprintSettings,
    FingerprintTrainSettings,
    SplitSettings,
    TrainSettings,
)

__all__ = [  # the package's face: every module imports from pipeline.config, never from its parts
    "ClusterSettings", "ProcessSettings",
    "DagSettings", "DemoRunSettings", "MetricsPageSettings", "NightlySettings", "PoolSettings", "RunDagSettings", "ENV_PREFIX", "OLD_ENV_PREFIXES",
    "PROJECT_ROOT", "RENAMED_SECTIONS", "ConfigError", "config_dir", "config_file", "db_url", "sql_dir", "EvalMetricSettings", "EvaluationSettings",
    "LatencySettings", "QueryPlan", "QuerySettings", "HNSWSettings", "HubSettings", "IVFPQSettings", "PublishSettings", "SearchSettings", "SegmentSettings",
    "AIRFLOW_SECTIONS", "EVAL_SECTIONS", "FILES", "FINGERPRINT_SECTIONS", "HOMES", "INDEX_SECTIONS", "NESTED", "SECTION_FILE", "SECTIONS", "TRAIN_SECTIONS",
    "AirflowConfig", "EvalConfig", "FingerprintConfig", "IndexConfig", "PipelineConfig", "Sections", "TrainConfig", "check_env", "defaults",
    "env_overrides", "load", "load_airflow", "load_eval", "load_fingerprint", "load_index", "load_pipeline", "load_train", "section", "validate",
    "AudioSettings", "CatalogVAESettings", "DemoCatalogSettings", "DreamSettings", "IngestSettings", "MossSettings", "RVQSettings",
    "SearchApiSettings", "ServiceSettings",
    "TokenizeSettings", "Wav2Vec2Settings", "AugmentSettings", "EmbedderSettings", "FingerprintSettings", "FingerprintTrainSettings", "SplitSettings",
    "TrainSettings", "FingerprintInferenceSettings",
    "ASR_SECTIONS", "AsrConfig", "load_asr", "AsrSettings", "Qwen3AsrSettings", "PocketsphinxSettings", "AsrEvalSettings",
]
