"""The settings classes of configs/index.yaml: types and checks only; the values and their comments are in the YAML.
``choices`` (a ClassVar, not a field): the names a str field, or each item of a tuple field, may take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pipeline.config.base import _Invalid
from pipeline.names import INDEX_KINDS, IVF_REFINES, MERIT_AGGREGATES, MERIT_METRICS


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
    rates_max_s: float
    rate_penalty: float
    min_query_segments: int
    query_hop_steps: int
    top_k: int
    hub_penalty: float

    def __post_init__(self):
        for key in ("segments_k", "match_k", "top_k", "min_query_segments", "query_hop_steps"):
            if getattr(self, key) < 1:
                raise _Invalid(key, f"expected at least 1, got {getattr(self, key)}")
        if self.match_drift < 0:
            raise _Invalid("match_drift", f"expected 0 or more segments, got {self.match_drift}")
        if not self.rates or any(r <= 0 for r in self.rates):
            raise _Invalid("rates", f"expected one or more playback rates above 0, got {list(self.rates)}")
        if self.hub_penalty < 0:
            raise _Invalid("hub_penalty", f"expected 0 or more, got {self.hub_penalty}")
        if self.rates_max_s < 0 or self.rate_penalty < 0:
            raise _Invalid("rates_max_s" if self.rates_max_s < 0 else "rate_penalty", "expected 0 or more")


@dataclass(frozen=True)
class HubSettings:
    """index.yaml ``hubs``: the probes each catalog segment's hub score is measured against (pipeline/embed/hubness.py)."""

    noise_probes: int
    k: int
    seed: int

    def __post_init__(self):
        if self.noise_probes < 1:
            raise _Invalid("noise_probes", f"expected at least 1, got {self.noise_probes}")
        if self.k < 1:
            raise _Invalid("k", f"expected at least 1, got {self.k}")


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
