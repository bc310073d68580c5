"""The Airflow UI plugin's "Retrieval metrics" page (plugins/cloudtune_metrics.py), served through its FastAPI app from a real metrics DB."""

import importlib.util
import os

import pytest
from fastapi.testclient import TestClient

from pipeline import config
from pipeline.store import db
from pipeline.store.tables import retrieval_metrics


@pytest.fixture
def client(tmp_path_factory):
    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow-home")))  # airflow reads it once per process
    spec = importlib.util.spec_from_file_location("cloudtune_metrics", config.PROJECT_ROOT / "plugins" / "cloudtune_metrics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.CloudTuneMetricsPlugin.fastapi_apps[0]["url_prefix"] == "/cloudtune"
    return TestClient(module.app)


def _record(run_id: str, recall_1: float, recall_10: float) -> None:
    with db.connect() as conn:
        db.start_run(conn, "pipeline", {}, run_id)
        db.finish_run(conn, run_id)
        rows = []
        for qset in ("5s/clean", "5s/pink0db"):
            for metric, k, value in (("recall", 1, recall_1), ("recall", 10, recall_10), ("recall", 100, 1.0), ("mrr", 0, recall_1 + 0.05)):
                rows.append({"run_id": run_id, "embedder": "contrastive", "index_kind": "hnsw", "query_set": qset, "metric": metric, "k": k,
                             "value": value, "recorded_at": db.utcnow()})
        rows.append({"run_id": run_id, "embedder": "contrastive", "index_kind": "hnsw", "query_set": "latency/5s", "metric": "recall", "k": 1,
                     "value": 0.0, "recorded_at": db.utcnow()})  # latency sets are not averaged in
        db.upsert(conn, retrieval_metrics, rows)
        conn.commit()


def test_page_without_metrics_says_so(client):
    page = client.get("/metrics")
    assert page.status_code == 200 and "No retrieval metrics yet" in page.text


def test_page_shows_the_latest_run_and_the_trend(client):
    _record("run-a", 0.5, 0.75)
    _record("run-b", 0.625, 0.875)
    page = client.get("/metrics")
    assert page.status_code == 200
    assert "<h2>Run run-b</h2>" in page.text
    assert "<td>contrastive</td><td>hnsw</td><td>2</td><td>0.6250</td><td>0.8750</td><td>1.0000</td><td>0.6750</td>" in page.text
    assert page.text.count("<svg") == 3 and "Recall@10 per run" in page.text
    older = client.get("/metrics", params={"run_id": "run-a"})
    assert "<h2>Run run-a</h2>" in older.text and "<td>0.5000</td><td>0.7500</td>" in older.text
    assert client.get("/metrics", params={"run_id": "nope"}).status_code == 404
