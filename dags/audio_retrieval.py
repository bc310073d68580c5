"""
### audio_retrieval: audio catalog -> searchable index, with its Recall@K / MRR in the metrics DB

`ingest` -> `train_tokenizer` -> `tokenize` (mapped over at most `max_shards` shards of the catalog) -> `splits`
-> `train_embedder` and `train_fingerprint` (the log-mel fingerprint model, on the same train tracks; skipped when
`fingerprint` is not among the embedders) -> `embed_catalog` -> `build_indexes` -> `evaluate` -> `publish` (the evaluation's choice by merit,
configs/index.yaml `publish`, with its reason in the task log; updates the Asset `cloudtune_published_index`) -> `report`.
After `splits`, in parallel with training, `wav2vec2_features` extracts the catalog's wav2vec2 vectors when `wav2vec2`
is among the embedders and a model is configured (`wav2vec2.model`, e.g. `CLOUDTUNE__WAV2VEC2__MODEL=/models/wav2vec2-base`);
otherwise it is skipped, with the reason in its log, and the run goes on without it.

One DAG run is one pipeline run: its id (the `run_id` param, or Airflow's run id made path-safe) names
`$CLOUDTUNE_HOME/runs/<run_id>/` and every row it writes (`runs`, `retrieval_metrics`, ...). Tasks pass paths,
never arrays. GPU-bound tasks run in pool `gpu` and on Celery queue `gpu` (`cloudtune airflow setup` makes the pool).
Defaults come from `configs/airflow.yaml` (`dag:`); every step is a plain function of `pipeline/steps/`.

Extending: another feature extractor goes after `splits` like `wav2vec2_features`, as a `@task(pool=GPU, queue=GPU)`
function upstream of `build_indexes`, which indexes every requested embedder whose embeddings the run has.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset, Param, TriggerRule, dag, get_current_context, task

from pipeline.names import DEVICES, EMBEDDERS, INDEX_KINDS, TOKENIZER_BACKENDS  # light: no imports of its own


def _settings() -> dict:
    from pipeline import config  # light (PyYAML); the heavy imports live inside the tasks

    return config.load_airflow()


SETTINGS = _settings()
D = SETTINGS["dag"]
GPU = SETTINGS["pools"].gpu  # pool and Celery queue of the GPU-bound tasks
PUBLISHED_INDEX = Asset(name="cloudtune_published_index", uri="cloudtune://published/index")  # also in nightly_reindex.py


def _run_id() -> str:
    from pipeline.steps.bookkeeping import context_run_id

    return context_run_id(get_current_context())


def _mark_failed(context) -> None:
    from pipeline.steps.bookkeeping import mark_failed

    mark_failed(context)


@dag(
    dag_id="audio_retrieval",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    tags=["cloudtune", "audio", "retrieval"],
    doc_md=__doc__,
    default_args={"retries": D.retries, "retry_delay": timedelta(seconds=D.retry_delay_s), "on_failure_callback": _mark_failed},
    params={
        "catalog": Param(D.catalog, type="string", minLength=1, title="Catalog", description="catalog name the roots are ingested into"),
        "catalog_roots": Param(list(D.catalog_roots), type="array", items={"type": "string"}, title="Catalog roots",
                               description="folders or files of audio to ingest (one per line); empty: the catalog as it is"),
        "tokenizer_backend": Param(D.tokenizer_backend, type="string", enum=list(TOKENIZER_BACKENDS), title="Tokenizer backend"),
        "epochs": Param(D.epochs, type="integer", minimum=1, title="Embedder epochs"),
        "fingerprint_epochs": Param(D.fingerprint_epochs, type="integer", minimum=1, title="Fingerprint epochs",
                                    description="epochs of the log-mel fingerprint model (trained when fingerprint is among the embedders)"),
        "train_catalogs": Param(list(D.train_catalogs), type="array", items={"type": "string"}, title="Fingerprint training music",
                                description="catalogs whose every track the fingerprint trains on too (ingested before; never queried, never "
                                            "a distractor; one per line)"),
        "embedding_dim": Param(D.embedding_dim, type="integer", minimum=8, title="Embedding dimension",
                               description="must be a multiple of configs/train.yaml embedder.heads"),
        "embedders": Param(list(D.embedders), type="array", items={"type": "string", "enum": list(EMBEDDERS)},
                           title="Embedders to evaluate"),
        "index_kinds": Param(list(D.index_kinds), type="array", items={"type": "string", "enum": list(INDEX_KINDS)}, title="Index kinds"),
        "distractors": Param(list(D.distractors), type="array", items={"type": "string"}, title="Distractor catalogs",
                             description="catalogs indexed beside the run's but never queried (ingested before; one per line)"),
        "device": Param(D.device, type="string", enum=list(DEVICES), title="Device"),
        "max_shards": Param(D.max_shards, type="integer", minimum=1, title="Tokenize shards (at most)"),
        "run_id": Param(None, type=["null", "string"], title="Pipeline run id", description="default: the Airflow run id, made path-safe"),
        "query_plan": Param(None, type=["null", "string"], title="Query plan",
                            description="a plan of configs/eval.yaml queries.plans (full, demo); default: queries.plan"),
    },
)
def audio_retrieval():
    @task
    def start() -> str:
        from pipeline.steps import bookkeeping

        return bookkeeping.start(_run_id(), "pipeline", dict(get_current_context()["params"]))

    @task
    def ingest(pipeline_run: str) -> dict:
        from pipeline.steps import retrieval

        p = get_current_context()["params"]
        return retrieval.ingest_roots(p["catalog"], list(p["catalog_roots"]))

    @task
    def train_tokenizer(ingested: dict) -> str | None:
        from pipeline.steps import retrieval

        return retrieval.train_tokenizer(ingested["catalog"], get_current_context()["params"]["tokenizer_backend"])

    @task
    def plan_shards(ingested: dict, codec: str | None) -> list[list[int]]:
        from pipeline.steps import retrieval

        return retrieval.plan_shards(ingested["catalog"], get_current_context()["params"]["max_shards"], D.min_tracks_per_shard)

    @task(pool=GPU, queue=GPU)
    def tokenize(shard: list[int]) -> str:
        from pipeline.steps import retrieval

        p = get_current_context()["params"]
        return retrieval.tokenize_shard(p["catalog"], p["tokenizer_backend"], shard, p["device"])

    @task
    def splits(pipeline_run: str, tokens_roots: list[str]) -> dict:
        from pipeline.steps import training

        roots = sorted(set(tokens_roots))
        return {"tokens_root": roots[0], "splits_dir": training.make_splits(pipeline_run, roots)}

    @task(pool=GPU, queue=GPU)
    def train_embedder(pipeline_run: str, data: dict) -> str:
        from pipeline.steps import training

        p = get_current_context()["params"]
        return training.train_embedder(pipeline_run, data["tokens_root"], data["splits_dir"], p["epochs"], p["embedding_dim"], p["device"])

    @task(pool=GPU, queue=GPU)
    def train_fingerprint(pipeline_run: str, data: dict) -> str:
        from airflow.sdk.exceptions import AirflowSkipException

        from pipeline.steps import training

        p = get_current_context()["params"]
        if "fingerprint" not in p["embedders"]:
            raise AirflowSkipException("fingerprint is not among the run's embedders")
        return training.train_fingerprint(pipeline_run, data["splits_dir"], p["fingerprint_epochs"], p["device"], p.get("train_catalogs"))

    @task(pool=GPU, queue=GPU)
    def wav2vec2_features(pipeline_run: str, data: dict) -> str:
        from airflow.sdk.exceptions import AirflowSkipException

        from pipeline.steps import retrieval

        p = get_current_context()["params"]
        try:
            return retrieval.wav2vec2_features(pipeline_run, list(p["embedders"]), p["device"],
                                               retrieval.gallery_catalogs(pipeline_run, list(p["distractors"])))
        except retrieval.StepSkipped as exc:
            raise AirflowSkipException(str(exc)) from None

    @task(pool=GPU, queue=GPU, trigger_rule=TriggerRule.NONE_FAILED)  # runs when train_fingerprint was skipped
    def embed_catalog(pipeline_run: str, checkpoints: list) -> dict:
        from pipeline.steps import retrieval

        p = get_current_context()["params"]
        return retrieval.embed_catalog(pipeline_run, [e for e in p["embedders"] if e not in retrieval.OWN_TASK_EMBEDDERS], p["device"],
                                       retrieval.gallery_catalogs(pipeline_run, list(p["distractors"])))

    @task(trigger_rule=TriggerRule.NONE_FAILED)  # runs when wav2vec2_features was skipped
    def build_indexes(pipeline_run: str, embeddings: dict) -> list[str]:
        from pipeline.steps import retrieval

        p = get_current_context()["params"]
        return retrieval.build_indexes(pipeline_run, retrieval.embedded(pipeline_run, list(p["embedders"])), list(p["index_kinds"]))

    @task(pool=GPU, queue=GPU)
    def evaluate(pipeline_run: str, indexes: list[str]) -> str:
        from pipeline.steps import retrieval

        p = get_current_context()["params"]
        return retrieval.evaluate(pipeline_run, list(p["embedders"]), list(p["index_kinds"]), p["device"], distractors=list(p["distractors"]),
                                  query_plan=p.get("query_plan"))

    @task(outlets=[PUBLISHED_INDEX])
    def publish(pipeline_run: str, evaluation_report: str) -> dict:
        from pipeline.steps import retrieval

        return retrieval.publish(pipeline_run)

    @task
    def report(pipeline_run: str, published: dict) -> str:
        from pipeline.steps import bookkeeping, retrieval

        path = retrieval.report(pipeline_run)
        bookkeeping.finish(pipeline_run, "succeeded", f"metric table {path}")
        return path

    pipeline_run = start()
    ingested = ingest(pipeline_run)
    shards = plan_shards(ingested, train_tokenizer(ingested))
    tokens_roots = tokenize.expand(shard=shards)
    data = splits(pipeline_run, tokens_roots)
    embeddings = embed_catalog(pipeline_run, [train_embedder(pipeline_run, data), train_fingerprint(pipeline_run, data)])
    indexes = build_indexes(pipeline_run, embeddings)
    wav2vec2_features(pipeline_run, data) >> indexes
    report(pipeline_run, publish(pipeline_run, evaluate(pipeline_run, indexes)))


audio_retrieval()
