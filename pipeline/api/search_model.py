"""The search model as the model table sees it (:mod:`pipeline.api.routing`): the published run's searcher, in this process
behind the batcher; what it accepts comes from ``search_api`` (content types, containers, ``min_clip_s``/``max_clip_s``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.api.uploads import AUDIO_TYPES, CLIP_WANTED, CONTAINERS, MULTIPART, ApiError
from pipeline.api.worker_models import Accepts

if TYPE_CHECKING:
    from pipeline.api.app import Service
    from pipeline.search import Searcher


def served(sr: Searcher) -> dict[str, Any]:
    """The run in service as /readyz and /v1/models name it: run, embedder, index kind and size, and for an embedder that has
    a choice of backend (the fingerprint: onnx or torch) the one it runs on."""
    backend = {"backend": sr.embedder.backend} if hasattr(sr.embedder, "backend") else {}
    return {"run_id": sr.run_id, "embedder": sr.embedder.name, **backend, "index_kind": sr.index_kind, "tracks": len(sr.index.track_ids),
            "vectors": int(sr.index.index.ntotal)}


class SearchModel:
    name = task = "search"
    route = "/v1/search"
    unavailable = None  # always configured: it serves whatever run is published

    def __init__(self, service: Service):
        s = service.settings
        self.service = service
        self.accepts = Accepts((*AUDIO_TYPES, MULTIPART), CLIP_WANTED, CONTAINERS, min_duration_s=s.min_clip_s, max_duration_s=s.max_clip_s,
                               min_key="search_api.min_clip_s", max_key="search_api.max_clip_s")

    @property
    def ready(self) -> bool:
        return self.service.ready

    @property
    def load(self) -> int:
        return self.service.batcher.depth() if self.service.batcher is not None else 0

    def check_ready(self) -> None:
        svc = self.service
        if not svc.ready:
            raise ApiError(503, f"not ready: {svc.error or 'loading the published run'}", {"Retry-After": str(svc.settings.retry_after_s)})

    async def describe(self) -> dict[str, Any]:
        svc, s = self.service, self.service.settings
        head = {"name": self.name, "task": self.task, "route": self.route, "available": svc.ready}
        rates = f"any (resampled to {svc.serving.searcher.sample_rate} Hz)" if svc.ready else "any"
        limits = {**self.accepts.as_dict(), "sample_rates": rates, "max_batch": s.max_batch, "queue_size": s.queue_size,
                  "concurrency": 1, "timeout_s": s.request_timeout_s}  # one model thread; a request's one deadline
        if not svc.ready:
            return head | limits | {"reason": svc.error or "loading the published run"}
        return head | served(svc.serving.searcher) | limits | svc.serving.observed.summary()
