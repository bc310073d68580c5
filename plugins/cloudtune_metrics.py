"""Airflow plugin: a "Retrieval metrics" page in the Airflow UI (menu Browse), served by a FastAPI app mounted at /cloudtune
on the api-server. It shows the latest run's Recall@K / MRR table, its per-query-set table (``?embedder=&kind=`` pick the pair)
and trend charts from the metrics DB (CLOUDTUNE_DB_URL); the page itself is pipeline/metrics_page.py."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse

app = FastAPI(title="CloudTune retrieval metrics")


@app.get("/metrics", response_class=HTMLResponse)
def metrics_page(run_id: str | None = None, embedder: str | None = None, kind: str | None = None) -> str:
    from pipeline.metrics_page import render

    try:
        return render(run_id, embedder=embedder, kind=kind)
    except LookupError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None


class CloudTuneMetricsPlugin(AirflowPlugin):
    name = "cloudtune_metrics"
    fastapi_apps = [{"app": app, "url_prefix": "/cloudtune", "name": "CloudTune retrieval metrics"}]
    external_views = [{"name": "Retrieval metrics", "href": "/cloudtune/metrics", "destination": "nav", "category": "browse",
                       "url_route": "cloudtune-metrics"}]
