"""
### nightly_reindex: keep the published index fresh, and catch retrieval regressions

`prepare` (the published run's splits and embedder) -> `ingest` (only what is new under the catalog roots)
-> `tokenize` (only tracks without token files) -> `embed_catalog` (the published embedder; tracks embedded before
are reused) -> `build_indexes` -> `evaluate` -> `check_regression` -> `publish` (the base run's embedder and index
kind, named, not re-chosen by merit; updates the Asset `cloudtune_published_index`) -> `report`.

`check_regression` compares the mean Recall@K (configs/airflow.yaml `nightly.metric_k`) over the query sets
with the previous succeeded nightly; a drop beyond `nightly.max_recall_drop` fails the run at once (no retry),
leaves the published index as it was, and shows in `sql/reports/regressions.sql`.
Schedule: configs/airflow.yaml `nightly.schedule`. Every step is a plain function of `pipeline/steps/`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, Param, dag, get_current_context, task

from pipeline.names import DEVICES, TOKENIZER_BACKENDS  # light: no imports of its own


def _settings() -> dict:
    from pipeline import config  # light (PyYAML); the heavy imports live inside the tasks

    return config.load_airflow()


SETTINGS = _settings()
D, N = SETTINGS["dag"], SETTINGS["nightly"]
GPU = SETTINGS["pools"].gpu
PUBLISHED_INDEX = Asset(name="cloudtune_published_index", uri="cloudtune://published/index")  # also in audio_retrieval.py


def _run_id() -> str:
    from pipeline.steps.bookkeeping import context_run_id

    return context_run_id(get_current_context())


def _mark_failed(context) -> None:
    from pipeline.steps.bookkeeping import mark_failed

    mark_failed(context)


@dag(
    dag_id="nightly_reindex",
    schedule=N.schedule,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["cloudtune", "audio", "nightly"],
    doc_md=__doc__,
    default_args={"retries": D.retries, "retry_delay": timedelta(seconds=D.retry_delay_s), "on_failure_callback": _mark_failed},
    params={
        "catalog": Param(D.catalog, type="string", minLength=1, title="Catalog", description="catalog the new audio is ingested into"),
        "catalog_roots": Param(list(D.catalog_roots), type="array", items={"type": "string"}, title="Catalog roots"),
        "tokenizer_backend": Param(D.tokenizer_backend, type="string", enum=list(TOKENIZER_BACKENDS), title="Tokenizer backend"),
        "device": Param(D.device, type="string", enum=list(DEVICES), title="Device"),
        "metric_k": Param(N.metric_k, type="integer", minimum=1, title="K of the Recall@K regression check"),
        "max_recall_drop": Param(N.max_recall_drop, type="number", minimum=0, title="Largest allowed Recall@K drop"),
        "run_id": Param(None, type=["null", "string"], title="Pipeline run id", description="default: the Airflow run id, made path-safe"),
    },
)
def nightly_reindex():
    @task
    def start() -> str:
        from pipeline.steps import bookkeeping

        return bookkeeping.start(_run_id(), "nightly", dict(get_current_context()["params"]))

    @task
    def prepare(pipeline_run: str) -> dict:
        from pipeline.steps import nightly

        return nightly.nightly_prepare(pipeline_run)

    @task
    def ingest(plan: dict) -> dict:
        from pipeline.steps import retrieval

        p = get_current_context()["params"]
        return retrieval.ingest_roots(p["catalog"], list(p["catalog_roots"]))

    @task(pool=GPU, queue=GPU)
    def tokenize(ingested: dict) -> str:
        from pipeline.steps import retrieval

        p = get_current_context()["params"]
        return retrieval.tokenize_shard(ingested["catalog"], p["tokenizer_backend"], None, p["device"])

    @task(pool=GPU, queue=GPU)
    def embed_catalog(pipeline_run: str, plan: dict, ingested: dict, tokens_root: str) -> dict:
        from pipeline.steps import retrieval

        catalogs = sorted({*plan["catalogs"], ingested["catalog"]})
        return retrieval.embed_catalog(pipeline_run, [plan["embedder"]], get_current_context()["params"]["device"], catalogs)

    @task
    def build_indexes(pipeline_run: str, plan: dict, embeddings: dict) -> list[str]:
        from pipeline.steps import retrieval

        return retrieval.build_indexes(pipeline_run, [plan["embedder"]], [plan["index_kind"]])

    @task(pool=GPU, queue=GPU)
    def evaluate(pipeline_run: str, plan: dict, ingested: dict, indexes: list[str]) -> str:
        from pipeline.steps import retrieval

        catalogs = sorted({*plan["catalogs"], ingested["catalog"]})
        return retrieval.evaluate(pipeline_run, [plan["embedder"]], [plan["index_kind"]], get_current_context()["params"]["device"], catalogs)

    @task(retries=0)
    def check_regression(pipeline_run: str, evaluation_report: str) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from pipeline.steps import nightly

        p = get_current_context()["params"]
        try:
            return nightly.check_regression(pipeline_run, p["metric_k"], p["max_recall_drop"])
        except nightly.RegressionError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task(outlets=[PUBLISHED_INDEX])
    def publish(pipeline_run: str, plan: dict, check: dict) -> dict:
        from pipeline.steps import retrieval

        return retrieval.publish(pipeline_run, plan["embedder"], plan["index_kind"])

    @task
    def report(pipeline_run: str, published: dict) -> str:
        from pipeline.steps import bookkeeping, retrieval

        path = retrieval.report(pipeline_run)
        bookkeeping.finish(pipeline_run, "succeeded", f"metric table {path}")
        return path

    pipeline_run = start()
    plan = prepare(pipeline_run)
    ingested = ingest(plan)
    embeddings = embed_catalog(pipeline_run, plan, ingested, tokenize(ingested))
    evaluation = evaluate(pipeline_run, plan, ingested, build_indexes(pipeline_run, plan, embeddings))
    report(pipeline_run, publish(pipeline_run, plan, check_regression(pipeline_run, evaluation)))


nightly_reindex()
