"""The service's Prometheus series, in a registry of their own (one per app, so several apps in one process never collide),
and the ASGI middleware that counts and times every request by route template and status."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ApiMetrics:
    """Requests and latency by route and status, model batch sizes, queue depth, index size, the published run served, swaps."""

    def __init__(self):
        r = self.registry = CollectorRegistry()
        labels = ["route", "method", "status"]
        self.requests = Counter("cloudtune_api_requests", "HTTP requests answered, by route template, method and status", labels, registry=r)
        self.latency = Histogram("cloudtune_api_request_seconds", "HTTP request latency, by route template, method and status", labels,
                                 buckets=LATENCY_BUCKETS_S, registry=r)
        self.batch_size = Histogram("cloudtune_api_batch_size", "clips per model batch (dynamic batching)", buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("cloudtune_api_queue_depth", "clips waiting for the model", registry=r)
        self.index_vectors = Gauge("cloudtune_api_index_vectors", "segment vectors in the served index", registry=r)
        self.index_tracks = Gauge("cloudtune_api_index_tracks", "tracks in the served index", registry=r)
        self.published = Gauge("cloudtune_api_published_run", "1 for the published run being served", ["run_id", "embedder", "index_kind"], registry=r)
        self.ready = Gauge("cloudtune_api_ready", "1 once the embedder and index are loaded", registry=r)
        self.swaps = Counter("cloudtune_api_swaps", "published runs swapped in while serving", registry=r)

    def show(self, searcher) -> None:
        """The run in service: its labels and index size."""
        self.index_vectors.set(searcher.index.index.ntotal)
        self.index_tracks.set(len(searcher.index.track_ids))
        self.published.clear()
        self.published.labels(searcher.run_id, searcher.embedder.name, searcher.index_kind).set(1)

    def swapped(self, searcher) -> None:
        self.swaps.inc()
        self.show(searcher)

    def track_queue(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(depth)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI: the status a response started with (500 when the app raised) and the time to its end, labelled by the
    matched route's template (``unmatched`` for a 404 of no route, so a scan of random paths adds no series)."""

    def __init__(self, app, metrics: ApiMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status, started = 500, time.perf_counter()

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            labels = (route, scope["method"], str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - started)
