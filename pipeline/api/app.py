"""The app factory: the published run loads in the background (``/readyz`` answers 503 until it has), then one
:class:`~pipeline.api.batching.Batcher` serves every search, and a newly published run is swapped in while the old one
answers (:mod:`pipeline.api.serving`). The models behind a model service (embed, transcribe) start beside it; the model
table (:mod:`pipeline.api.routing`) holds them all. Refusals are JSON ``{"detail": reason}`` with their status."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from pipeline import __version__
from pipeline.api import routes
from pipeline.api.batching import Batcher
from pipeline.api.metrics import ApiMetrics, MetricsMiddleware
from pipeline.api.routing import Models
from pipeline.api.search_model import SearchModel
from pipeline.api.serving import Serving, watch
from pipeline.api.uploads import ApiError
from pipeline.api.worker_models import WorkerModel
from pipeline.config import SearchApiSettings
from pipeline.errors import one_line
from pipeline.search import Searcher

log = logging.getLogger(__name__)


@dataclass
class Service:
    """What the routes share: the settings, the metrics, the API key (None: no key asked), the model table, and once loaded
    the run in service and the batcher."""

    settings: SearchApiSettings
    metrics: ApiMetrics
    api_key: str | None
    models: Models = field(init=False)  # set by create_app: search, then the worker models
    serving: Serving | None = None
    batcher: Batcher | None = None
    error: str | None = None  # why loading failed: /readyz says it

    @property
    def ready(self) -> bool:
        return self.serving is not None and self.batcher is not None


def create_app(settings: SearchApiSettings, load_searcher: Callable[[], Searcher], api_key: str | None = None,
               published_stamp: Callable[[], str | None] | None = None, workers: Sequence[WorkerModel] = ()) -> FastAPI:
    """The search app. ``load_searcher`` builds the published run's :class:`Searcher` (in a thread: at startup, and again at each
    publish); ``api_key``: required as a Bearer token on the /v1 routes when given; ``published_stamp``: what changes when a run
    is published (its ``published_at``), polled every ``search_api.reload_poll_s``; None: no hot swap; ``workers``: the models
    behind a model service (/v1/embed, /v1/transcribe; a task none serves answers 501), started with the app."""
    service = Service(settings, ApiMetrics(), api_key)
    service.models = Models([SearchModel(service), *workers])

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        tasks = [asyncio.create_task(_load(service, load_searcher, published_stamp)), *(asyncio.create_task(w.start()) for w in workers)]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if service.batcher is not None:
                await service.batcher.stop()
            await asyncio.gather(*(w.stop() for w in workers))

    app = FastAPI(title="CloudTune search", version=__version__, lifespan=lifespan,
                  description="Find catalog tracks (and where in them) from a short audio clip, with the published run. See docs/search_api.md.")
    app.state.service = service
    app.include_router(routes.router)
    app.add_exception_handler(ApiError, _refused)
    app.add_exception_handler(Exception, _failed)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    return app


async def _load(service: Service, load_searcher: Callable[[], Searcher], stamp: Callable[[], str | None] | None) -> None:
    """Load the published run, start the batcher, then (with ``stamp``) watch for the next publish until cancelled."""
    try:
        loaded_for = await asyncio.to_thread(stamp) if stamp else None
        searcher = await asyncio.to_thread(load_searcher)
    except Exception as exc:
        service.error = f"loading the published run failed: {type(exc).__name__}: {one_line(exc)}"
        log.error("search api: %s", service.error)
        return
    s, m = service.settings, service.metrics
    serving = Serving(searcher, loaded_for)
    batcher = Batcher(serving.search, s.max_batch, s.max_wait_ms / 1000, s.queue_size, on_batch=m.batch_size.observe)
    batcher.start()
    m.track_queue(batcher.depth)
    m.show(searcher)
    m.ready.set(1)
    service.serving, service.batcher = serving, batcher
    log.info("search api: serving run %s (%s, %s index of %d tracks)", searcher.run_id, searcher.embedder.name, searcher.index_kind,
             len(searcher.index.track_ids))
    if stamp and s.reload_poll_s > 0:
        await watch(serving, load_searcher, stamp, s.reload_poll_s, on_swap=m.swapped)


async def _refused(request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse({"detail": exc.reason}, exc.status, headers=exc.headers)


async def _failed(request: Request, exc: Exception) -> JSONResponse:
    """A bug, not bad input (bad input is an ApiError): logged with its traceback, answered 500 in one line."""
    log.exception("search api: %s %s failed", request.method, request.url.path)
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, 500)
