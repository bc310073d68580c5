"""The settings classes of configs/airflow.yaml: types and checks only; the values and their comments are in the YAML.
``choices`` (a ClassVar, not a field): the names a str field, or each item of a tuple field, may take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pipeline.config.base import _Invalid
from pipeline.names import DEVICES, EMBEDDERS, INDEX_KINDS, TOKENIZER_BACKENDS


@dataclass(frozen=True)
class DagSettings:
    catalog: str
    catalog_roots: tuple[str, ...]
    tokenizer_backend: str
    epochs: int | None  # None (null): the library default; load_airflow fills it in
    embedding_dim: int | None
    fingerprint_epochs: int | None
    train_catalogs: tuple[str, ...] | None
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
class ProcessSettings:
    """airflow.yaml ``processes``: what `cloudtune airflow standalone` and `cluster` start and how they stop it."""

    parallelism: int | None
    stop_grace_s: float

    def __post_init__(self):
        if self.parallelism is not None and self.parallelism < 1:
            raise _Invalid("parallelism", f"{self.parallelism}: must be >= 1 (or null: the CPU count)")


@dataclass(frozen=True)
class ClusterSettings:
    """airflow.yaml ``cluster``: `cloudtune airflow cluster up|down|status` (CeleryExecutor on this machine)."""

    metadata_db_url: str
    broker_url: str
    host: str
    port: int
    users: str
    start_timeout_s: float


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
