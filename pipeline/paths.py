"""The one map from (run, embedder, index kind, catalog, codec version, ...) to artifact paths under ``$CLOUDTUNE_HOME``.

No other module spells an artifact path: they ask here (Kedro's ``catalog.yml`` in code form). The layout::

    $CLOUDTUNE_HOME/
      cloudtune.db                              default metrics DB (SQLite; CLOUDTUNE_DB_URL picks another)
      published.json                            the run that search serves
      audio/<h>/<hash>.flac                     canonical audio of every ingested track (ingest)
      demo/catalog-seed<S>-<N>x<L>s/            the demo catalog's source files
      tokenizers/<scope>/<version>/             a trained rvq codec; tokenizers/<scope>/current names the newest
      tokens/<scope>/<version>/                 token files of a catalog (scope) by one tokenizer version
      airflow/                                  AIRFLOW_HOME of `cloudtune run` / `airflow standalone` / `airflow cluster`
      airflow/cluster.json  airflow/logs/       the cluster's processes and their logs (`cloudtune airflow cluster up`)
      models/qwen3-asr/<name>-<hash>/           a release-layout Qwen3-ASR checkpoint converted to transformers' layout (a cache)
      models/qwen3-asr/<name>-<hash>.int8-<dtype>.safetensors   its linear layers quantized to int8 (qwen3_asr.quantize; a cache)
      runs/<run_id>/
        params.json  nightly.json  train.yaml   the DAG run's params, the nightly plan, the training config it used
        splits/{train,val,test}.txt             track-level splits (summary.json beside them)
        models/embedder.pt|.json|training_curve.png
        models/fingerprint.pt|.json|.onnx         the fingerprint model, its summary, its ONNX export
        models/fingerprint.int8.onnx              ... quantized to int8 (fingerprint_inference.precision)
        embeddings/<embedder>/{manifest.json, vectors.npy, segments.csv}
        index/<embedder>/<kind>/{manifest.json, index.faiss}
        reports/{evaluation.html, evaluation.json, metrics.csv, catalog_vae/}
        reports/asr_eval.html                   an ASR evaluation's report (cloudtune asr eval, the asr_evaluation DAG)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path


def home() -> Path:
    """The artifact root (``CLOUDTUNE_HOME``, default ``./var``), created on first use."""
    path = Path(os.environ.get("CLOUDTUNE_HOME", "var")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- home-level artifacts ---------------------------------------------------------------------------------


def db_file() -> Path:
    return home() / "cloudtune.db"


def published_json() -> Path:
    return home() / "published.json"


def canonical_audio(relpath: str) -> Path:
    """A track's canonical FLAC from its `tracks.audio_path` (relative to the home, see :func:`canonical_relpath`)."""
    return home() / relpath


def canonical_relpath(content_hash: str) -> str:
    """Where ingest stores the canonical FLAC of decoded content with this hash, relative to the home (kept in `tracks`)."""
    return f"audio/{content_hash[:2]}/{content_hash}.flac"


def demo_catalog_dir(seed: int, tracks: int, seconds: float) -> Path:
    return home() / "demo" / f"catalog-seed{seed}-{tracks}x{seconds:g}s"


def tokenizers_root() -> Path:
    return home() / "tokenizers"


def codec_dir(scope: str, version: str | None = None) -> Path:
    """rvq codecs trained on one catalog (scope); with ``version``, that codec's folder."""
    folder = tokenizers_root() / scope
    return folder / version if version else folder


def codec_pointer(scope: str) -> Path:
    """The file naming the scope's newest codec version."""
    return codec_dir(scope) / "current"


def tokens_dir(scope: str, version: str) -> Path:
    return home() / "tokens" / scope / version


def airflow_home() -> Path:
    return home() / "airflow"


def airflow_cluster_state() -> Path:
    """`cloudtune airflow cluster`'s processes (pid, role, queue, log): written by `up`, removed by `down`."""
    return airflow_home() / "cluster.json"


def airflow_cluster_secret() -> Path:
    """The secret the cluster's api-server signs task and UI tokens with (mode 0600): made by the first `up`, kept by `down`, so
    that a process `up` restarts trusts the tokens of those still running."""
    return airflow_home() / "cluster_secret"


def airflow_cluster_logs() -> Path:
    """The log of each process `cloudtune airflow cluster up` starts (`<role>.log`, `worker-<queue>.log`)."""
    return airflow_home() / "logs"


def asr_model_cache(source: str | os.PathLike) -> Path:
    """Where the transformers-layout copy of the release-layout Qwen3-ASR checkpoint in ``source`` is kept:
    ``models/qwen3-asr/<name>-<hash>``, the hash (12 hex digits of SHA-256) over the resolved path of ``source`` and the size and
    mtime of its config.json and weight files (``*.safetensors``, the shard index), so the same checkpoint maps to the same copy
    on every load and a checkpoint replaced in place gets a new one."""
    folder = Path(source).expanduser().resolve()
    files = [folder / "config.json", *sorted(folder.glob("*.safetensors")), *sorted(folder.glob("*.safetensors.index.json"))]
    key = [str(folder)]
    for f in files:
        st = f.stat() if f.is_file() else None
        key.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}" if st else f"{f.name}:-")
    digest = hashlib.sha256("\n".join(key).encode()).hexdigest()[:12]
    return home() / "models" / "qwen3-asr" / f"{folder.name}-{digest}"


def asr_int8_cache(source: str | os.PathLike, dtype: str) -> Path:
    """The int8 weights of the Qwen3-ASR checkpoint in ``source`` (transformers' layout) with scales in ``dtype`` (bfloat16):
    ``models/qwen3-asr/<name>-<hash>.int8-<dtype>.safetensors``, keyed like :func:`asr_model_cache`."""
    cache = asr_model_cache(source)
    return cache.with_name(f"{cache.name}.int8-{dtype}.safetensors")


# --- a run's artifacts --------------------------------------------------------------------------------------


def run_dir(run_id: str) -> Path:
    return home() / "runs" / str(run_id)


def run_params(run_id: str) -> Path:
    return run_dir(run_id) / "params.json"


def nightly_plan(run_id: str) -> Path:
    return run_dir(run_id) / "nightly.json"


def train_config(run_id: str) -> Path:
    """The training config a DAG run trained with (configs/train.yaml plus the run's params)."""
    return run_dir(run_id) / "train.yaml"


def splits_dir(run_id: str) -> Path:
    return run_dir(run_id) / "splits"


def split_list(splits: Path, split: str) -> Path:
    """``train.txt`` / ``val.txt`` / ``test.txt`` in a splits folder (a run's, or one given on the command line)."""
    return Path(splits) / f"{split}.txt"


def models_dir(run_id: str) -> Path:
    return run_dir(run_id) / "models"


def embedder_checkpoint(run_id: str) -> Path:
    """The token embedder's checkpoint (the ``contrastive`` embedder), rewritten after every epoch."""
    return models_dir(run_id) / "embedder.pt"


def embedder_summary(run_id: str) -> Path:
    return models_dir(run_id) / "embedder.json"


def training_curve(run_id: str) -> Path:
    return models_dir(run_id) / "training_curve.png"


def fingerprint_checkpoint(run_id: str) -> Path:
    """The fingerprint model's checkpoint (the ``fingerprint`` embedder), rewritten after every epoch."""
    return models_dir(run_id) / "fingerprint.pt"


def fingerprint_onnx(run_id: str, precision: str = "float32") -> Path:
    """The fingerprint model's network (log-mel in, vectors out) exported for ONNX Runtime (`cloudtune export onnx`), in float32
    or quantized to int8; it names the checkpoint it was exported from, so a checkpoint trained further is not served by an
    older export."""
    return models_dir(run_id) / ("fingerprint.onnx" if precision == "float32" else f"fingerprint.{precision}.onnx")


def fingerprint_summary(run_id: str) -> Path:
    return models_dir(run_id) / "fingerprint.json"


def fingerprint_curve(run_id: str) -> Path:
    return models_dir(run_id) / "fingerprint_curve.png"


@dataclass(frozen=True)
class EmbeddingFiles:
    """One embedder's segment vectors of a run's catalog."""

    folder: Path

    @property
    def manifest(self) -> Path:
        return self.folder / "manifest.json"

    @property
    def vectors(self) -> Path:
        return self.folder / "vectors.npy"

    @property
    def segments(self) -> Path:
        return self.folder / "segments.csv"

    @property
    def hubness(self) -> Path:
        return self.folder / "hubness.npy"


def embeddings(run_id: str, embedder: str) -> EmbeddingFiles:
    return EmbeddingFiles(run_dir(run_id) / "embeddings" / embedder)


@dataclass(frozen=True)
class IndexFiles:
    """One FAISS index (embedder x kind) of a run."""

    folder: Path

    @property
    def manifest(self) -> Path:
        return self.folder / "manifest.json"

    @property
    def index(self) -> Path:
        return self.folder / "index.faiss"


def index(run_id: str, embedder: str, kind: str) -> IndexFiles:
    return IndexFiles(run_dir(run_id) / "index" / embedder / kind)


def reports_dir(run_id: str) -> Path:
    return run_dir(run_id) / "reports"


def evaluation_json(run_id: str) -> Path:
    """Written last by a finished evaluation: publishing and search read it."""
    return reports_dir(run_id) / "evaluation.json"


def evaluation_html(run_id: str) -> Path:
    return reports_dir(run_id) / "evaluation.html"


def metrics_csv(run_id: str) -> Path:
    return reports_dir(run_id) / "metrics.csv"


def catalog_vae_dir(run_id: str) -> Path:
    return reports_dir(run_id) / "catalog_vae"


def asr_report(run_id: str) -> Path:
    """The HTML report of an ASR evaluation run (`cloudtune asr eval`)."""
    return reports_dir(run_id) / "asr_eval.html"
