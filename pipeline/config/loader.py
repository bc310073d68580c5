"""Loading :mod:`pipeline.config`: the registry (file -> section -> settings class), the YAML read and merged with a partial
file and the environment, each section built into its typed settings class, and the typed loaders of the seven files."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

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
from pipeline.config.base import ENV_PREFIX, OLD_ENV_PREFIXES, RENAMED_SECTIONS, ConfigError, _Invalid, config_file
from pipeline.config.eval_settings import EvalMetricSettings, EvaluationSettings, LatencySettings, QueryPlan, QuerySettings
from pipeline.config.index_settings import HNSWSettings, HubSettings, IVFPQSettings, PublishSettings, SearchSettings, SegmentSettings
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
    "search_api": SearchApiSettings,
}
TRAIN_SECTIONS: dict[str, type] = {"embedder": EmbedderSettings, "training": TrainSettings, "splits": SplitSettings}
FINGERPRINT_SECTIONS: dict[str, type] = {"fingerprint": FingerprintSettings, "fingerprint_training": FingerprintTrainSettings, "augment": AugmentSettings,
                                         "fingerprint_inference": FingerprintInferenceSettings}
INDEX_SECTIONS: dict[str, type] = {"segments": SegmentSettings, "hnsw": HNSWSettings, "ivfpq": IVFPQSettings, "search": SearchSettings, "hubs": HubSettings,
                                   "publish": PublishSettings}
EVAL_SECTIONS: dict[str, type] = {"queries": QuerySettings, "metrics": EvalMetricSettings, "latency": LatencySettings, "evaluation": EvaluationSettings}
AIRFLOW_SECTIONS: dict[str, type] = {"dag": DagSettings, "pools": PoolSettings, "nightly": NightlySettings, "run": RunDagSettings, "demo": DemoRunSettings,
                                     "metrics_page": MetricsPageSettings, "processes": ProcessSettings, "cluster": ClusterSettings}

ASR_SECTIONS: dict[str, type] = {"asr": AsrSettings, "qwen3_asr": Qwen3AsrSettings, "pocketsphinx": PocketsphinxSettings, "asr_eval": AsrEvalSettings}

FILES: dict[str, dict[str, type]] = {"pipeline": SECTIONS, "train": TRAIN_SECTIONS, "fingerprint": FINGERPRINT_SECTIONS, "index": INDEX_SECTIONS,
                                     "eval": EVAL_SECTIONS, "airflow": AIRFLOW_SECTIONS, "asr": ASR_SECTIONS}
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
    search_api: SearchApiSettings


class TrainConfig(Sections):
    embedder: EmbedderSettings
    training: TrainSettings
    splits: SplitSettings


class FingerprintConfig(Sections):
    fingerprint: FingerprintSettings
    fingerprint_training: FingerprintTrainSettings
    augment: AugmentSettings
    fingerprint_inference: FingerprintInferenceSettings


class AsrConfig(Sections):
    asr: AsrSettings
    qwen3_asr: Qwen3AsrSettings
    pocketsphinx: PocketsphinxSettings
    asr_eval: AsrEvalSettings


class IndexConfig(Sections):
    segments: SegmentSettings
    hnsw: HNSWSettings
    ivfpq: IVFPQSettings
    search: SearchSettings
    hubs: HubSettings
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
    processes: ProcessSettings
    cluster: ClusterSettings


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


def load_asr(path: str | os.PathLike | None = None) -> AsrConfig:
    """configs/asr.yaml (``path``: a partial file merged over it): ``.asr``, ``.qwen3_asr``, ``.pocketsphinx``, ``.asr_eval``."""
    return _typed_file(AsrConfig, "asr", path)


def load_index(path: str | os.PathLike | None = None) -> IndexConfig:
    return _typed_file(IndexConfig, "index", path)


def load_eval(path: str | os.PathLike | None = None) -> EvalConfig:
    return _typed_file(EvalConfig, "eval", path)


def load_airflow(path: str | os.PathLike | None = None) -> AirflowConfig:
    """configs/airflow.yaml. Light (PyYAML): the DAG files call it at parse time. The run form's ``epochs``, ``embedding_dim``,
    ``fingerprint_epochs`` and ``train_catalogs`` left null are the library's defaults (configs/train.yaml, configs/fingerprint.yaml), so each
    default has one home."""
    cfg = _typed_file(AirflowConfig, "airflow", path)
    dag, filled = cfg["dag"], {}
    if dag.epochs is None or dag.embedding_dim is None:
        train = load_train()
        filled |= {"epochs": train.training.epochs if dag.epochs is None else dag.epochs,
                   "embedding_dim": train.embedder.embedding_dim if dag.embedding_dim is None else dag.embedding_dim}
    if dag.fingerprint_epochs is None or dag.train_catalogs is None:
        fp = load_fingerprint().fingerprint_training
        filled |= {"fingerprint_epochs": fp.epochs if dag.fingerprint_epochs is None else dag.fingerprint_epochs,
                   "train_catalogs": fp.train_catalogs if dag.train_catalogs is None else dag.train_catalogs}
    cfg["dag"] = replace(dag, **filled)
    return cfg


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
