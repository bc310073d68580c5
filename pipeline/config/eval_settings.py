"""The settings classes of configs/eval.yaml: types and checks only; the values and their comments are in the YAML.
``choices`` (a ClassVar, not a field): the names a str field, or each item of a tuple field, may take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pipeline.config.base import _Invalid
from pipeline.names import EMBEDDERS, INDEX_KINDS, degradation_steps


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
