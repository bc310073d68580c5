"""The Airflow UI plugin's "Retrieval metrics" page (plugins/cloudtune_metrics.py), served through its FastAPI app from a real metrics DB."""

import importlib.util
import os
import re

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


SETS = {  # (embedder, kind) -> {query_set: Recall@1}; lengths and degradations as the evaluation names them
    ("contrastive", "hnsw"): {"1s/clean": 0.9, "1s/pink0db": 0.4, "5s/clean": 1.0, "5s/pink0db": 0.96, "5s/speed0.97": 0.5, "10s/speed0.97": 0.97,
                              "2.5s/gain-12db": 0.99},
    ("mel-stats", "flat"): {"1s/clean": 1.0, "5s/clean": 1.0, "5s/pink0db": 0.2},
}


def _record_sets(run_id: str, choice: dict | None = None) -> None:
    from pipeline import paths
    from pipeline.fsutil import write_json

    with db.connect() as conn:
        db.start_run(conn, "pipeline", {}, run_id)
        rows = [{"run_id": run_id, "embedder": emb, "index_kind": kind, "query_set": qset, "metric": metric, "k": k, "value": value,
                 "recorded_at": db.utcnow()}
                for (emb, kind), sets in SETS.items() for qset, r1 in sets.items()
                for metric, k, value in (("recall", 1, r1), ("recall", 10, 1.0), ("recall", 100, 1.0), ("mrr", 0, r1), ("queries", 0, 20))]
        rows.append({"run_id": run_id, "embedder": "contrastive", "index_kind": "hnsw", "query_set": "latency/5s", "metric": "latency_e2e_p95_ms",
                     "k": 0, "value": 3.0, "recorded_at": db.utcnow()})
        db.upsert(conn, retrieval_metrics, rows)
        conn.commit()
    if choice:
        write_json(paths.evaluation_json(run_id), {"run_id": run_id, "embedders": ["mel-stats", "contrastive"], "choice": choice})


def test_page_shows_the_per_set_table_with_failing_cells_marked_and_the_choice(client, monkeypatch):
    choice = {"embedder": "contrastive", "index_kind": "hnsw", "criterion": "worst degraded Recall@1 at 5 s queries", "score": 0.5,
              "reason": "contrastive/hnsw has the best worst degraded Recall@1 at 5 s queries: 0.5000 (worst on 5s/speed0.97); runner-up ..."}
    _record_sets("run-s", choice)
    page = client.get("/metrics").text  # the latest run; its choice's pair by default
    assert "<h2>Run run-s</h2>" in page and page.count("<svg") == 3  # the mean table and the trend stay
    assert "<b>Choice by merit</b> (worst degraded Recall@1 at 5 s queries): contrastive / hnsw, 0.5000. contrastive/hnsw has the best" in page
    assert "<h3>Per query set: contrastive / hnsw</h3>" in page and "marked where below 0.95" in page
    table = page[page.index("<table class='sets'>"):]
    table = table[:table.index("</table>")]
    assert "<tr><th>degradation</th><th>1 s</th><th>2.5 s</th><th>5 s</th><th>10 s</th></tr>" in table  # every length, in order
    rows = re.findall(r"<tr(?: class='worst')?><td>([^<]+)</td>(.*?)</tr>", table)
    assert [d for d, _ in rows] == ["clean", "gain-12db", "pink0db", "speed0.97", "worst degraded"]  # clean first
    cells = {d: re.findall(r"<td class='(\w+)'[^>]*>([^<]+)</td>", body) for d, body in rows}
    assert cells["clean"] == [("fail", "0.9000"), ("muted", "&ndash;"), ("pass", "1.0000"), ("muted", "&ndash;")]  # 0.9 < 0.95 is marked
    assert cells["pink0db"] == [("fail", "0.4000"), ("muted", "&ndash;"), ("pass", "0.9600"), ("muted", "&ndash;")]
    assert cells["speed0.97"] == [("muted", "&ndash;"), ("muted", "&ndash;"), ("fail", "0.5000"), ("pass", "0.9700")]
    assert cells["worst degraded"] == [("fail", "0.4000"), ("pass", "0.9900"), ("fail", "0.5000"), ("pass", "0.9700")]
    assert "title='5s/speed0.97: queries 20, Recall@10 1.0000, MRR 0.5000'" in table
    other = client.get("/metrics", params={"run_id": "run-s", "embedder": "mel-stats"}).text  # the selector
    assert "<h3>Per query set: mel-stats / flat</h3>" in other and "<td class='fail' title='5s/pink0db" in other
    assert client.get("/metrics", params={"run_id": "run-s", "embedder": "wav2vec2"}).status_code == 404
    monkeypatch.setenv("CLOUDTUNE__METRICS_PAGE__FAIL_BELOW", "0.3")
    relaxed = client.get("/metrics", params={"run_id": "run-s", "kind": "flat"}).text
    assert "marked where below 0.3" in relaxed and "<td class='fail' title='5s/pink0db: queries 20" in relaxed and relaxed.count("class='fail'") == 2


def test_page_without_a_choice_shows_the_first_pair(client):
    _record_sets("run-n")
    page = client.get("/metrics").text
    assert "No choice by merit" in page and "<h3>Per query set: contrastive / hnsw</h3>" in page


def test_retrieval_sets_report_splits_length_and_degradation_on_both_databases(db_url):
    from pipeline.store import reports

    _record_sets("run-a")
    _record_sets("run-b")
    table = reports.run_report("retrieval_sets", {"run_id": "run-a"}, url=db_url)
    assert set(table.run_id) == {"run-a"} and len(table) == sum(map(len, SETS.values()))
    got = {(r.embedder, r.index_kind, float(r.length_s), r.degradation): (r.query_set, r.recall_at_1, r.recall_at_10, r.mrr, r.queries)
           for r in table.itertuples()}
    assert got["contrastive", "hnsw", 2.5, "gain-12db"] == ("2.5s/gain-12db", 0.99, 1.0, 0.99, 20)
    assert got["contrastive", "hnsw", 10.0, "speed0.97"][0] == "10s/speed0.97"
    assert [(e, k, float(x), d) for e, k, x, d in table[["embedder", "index_kind", "length_s", "degradation"]].itertuples(index=False)][:4] == [
        ("contrastive", "hnsw", 1.0, "clean"), ("contrastive", "hnsw", 1.0, "pink0db"), ("contrastive", "hnsw", 2.5, "gain-12db"),
        ("contrastive", "hnsw", 5.0, "clean")]
    assert set(reports.run_report("retrieval_sets", url=db_url).run_id) == {"run-b"}  # default: the latest run
