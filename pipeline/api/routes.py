"""The routes: ``POST /v1/search`` (one clip), ``POST /v1/search:batch`` (several), ``GET /v1/models``, ``/healthz``, ``/readyz``, ``/metrics``;
``POST /v1/embed`` lives in :mod:`pipeline.api.embed`, ``POST /v1/transcribe`` in :mod:`pipeline.api.transcribe`. Each /v1 task
route takes its model from the model table (:mod:`pipeline.api.routing`).

Each search request has one deadline (``search_api.request_timeout_s``): a body still arriving when it passes is a 408,
a clip not yet searched a 504. Clips are decoded in threads, searched by the batcher on the model thread.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from pipeline.api import embed, transcribe
from pipeline.api.auth import authorized
from pipeline.api.batching import QueueFull
from pipeline.api.search_model import served
from pipeline.api.serving import Clip
from pipeline.api.uploads import CLIP_BODY, ApiError, decode, media_type, uploads

if TYPE_CHECKING:
    from pipeline.api.app import Service
    from pipeline.search import Searcher


class Hit(BaseModel):
    rank: int
    track_id: str
    source_uri: str | None
    score: float
    offset_s: float


class SearchAnswer(BaseModel):
    results: list[Hit]
    run_id: str
    embedder: str
    index_kind: str
    seconds: float  # time the service took to answer, from the request's arrival
    clip_s: float  # length of the clip searched


class BatchAnswer(SearchAnswer):
    file: str  # the part's file name


class BatchRefusal(BaseModel):
    """A file of a batch that cannot be searched; the others still answer."""

    file: str
    error: str
    status: int  # the HTTP status this file alone would have got


ERRORS = {code: {"description": why} for code, why in (
    (401, "missing or wrong API key"), (408, "the upload took longer than search_api.request_timeout_s"),
    (413, "body over search_api.max_upload_mb"), (415, "not an audio content type or body"),
    (422, "unreadable audio, or a clip shorter than min_clip_s or longer than max_clip_s"),
    (503, "not ready yet, or the queue is full (Retry-After)"), (504, "not searched within search_api.request_timeout_s"))}
FILES_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}
TOP_K = Query(None, ge=1, le=1000, description="tracks per clip (default configs/index.yaml search.top_k)")


def _service(request: Request) -> Service:
    return request.app.state.service


async def _api_key(request: Request) -> None:
    key = _service(request).api_key
    if key and not authorized(request.headers.get("authorization"), key):
        raise ApiError(401, "missing or wrong API key: send `Authorization: Bearer <key>`", {"WWW-Authenticate": "Bearer"})


router = APIRouter()
v1 = APIRouter(prefix="/v1", dependencies=[Depends(_api_key)], tags=["search"])


def _ready(request: Request, content_type: str | None = None) -> Service:
    """The service, once the model table has a started search model accepting ``content_type`` (None: not checked here)."""
    svc = _service(request)
    svc.models.pick("search", content_type=content_type)
    return svc


async def _read(request: Request, svc: Service, many: bool, deadline: float) -> list[tuple[str, bytes]]:
    try:
        async with asyncio.timeout_at(deadline):
            return await uploads(request, svc.settings, many)
    except TimeoutError:
        raise ApiError(408, f"the upload took longer than {svc.settings.request_timeout_s:g} s (search_api.request_timeout_s)") from None


def _late(svc: Service) -> ApiError:
    return ApiError(504, f"not answered within {svc.settings.request_timeout_s:g} s (search_api.request_timeout_s)")


async def _decode_each(svc: Service, files: list[tuple[str, bytes]], deadline: float) -> list[Clip | ApiError]:
    """Each file decoded in a thread at the rate of the searcher in service: its clip, or the ApiError that refuses it."""
    async def one(data: bytes) -> Clip | ApiError:
        rate = svc.serving.searcher.sample_rate
        try:
            return Clip(await run_in_threadpool(decode, data, rate, svc.settings), rate)
        except ApiError as exc:
            return exc

    try:
        async with asyncio.timeout_at(deadline):
            return list(await asyncio.gather(*(one(data) for _, data in files)))
    except TimeoutError:
        raise _late(svc) from None


async def _search(svc: Service, clips: list[Clip], top_k: int | None, deadline: float) -> list[tuple[Searcher, list[dict]]]:
    """Per clip (the searcher that answered it, its hits)."""
    s = svc.settings
    try:
        async with asyncio.timeout_at(deadline):
            return await svc.batcher.submit(clips, top_k or svc.serving.searcher.index.settings.top_k)
    except QueueFull as exc:
        raise ApiError(503, f"busy: {exc}; retry later", {"Retry-After": str(s.retry_after_s)}) from None
    except TimeoutError:
        raise _late(svc) from None


def _answer(answered: tuple[Searcher, list[dict]], started: float, clip: Clip) -> dict:
    sr, hits = answered
    return {"results": hits, "run_id": sr.run_id, "embedder": sr.embedder.name, "index_kind": sr.index_kind,
            "seconds": round(time.perf_counter() - started, 6), "clip_s": round(len(clip.wave) / clip.sample_rate, 6)}


@v1.post("/search", response_model=SearchAnswer, responses=ERRORS, openapi_extra=CLIP_BODY)
async def search(request: Request, top_k: int | None = TOP_K) -> dict:
    """One clip (raw body, or multipart field ``file``) -> its tracks: the answer of `cloudtune search --json` for it."""
    started, svc = time.perf_counter(), _ready(request, media_type(request))
    deadline = asyncio.get_running_loop().time() + svc.settings.request_timeout_s
    with svc.batcher.incoming():
        [clip] = await _decode_each(svc, await _read(request, svc, False, deadline), deadline)
    if isinstance(clip, ApiError):
        raise clip
    [answered] = await _search(svc, [clip], top_k, deadline)
    return _answer(answered, started, clip)


@v1.post("/search:batch", response_model=list[BatchAnswer | BatchRefusal], responses=ERRORS, openapi_extra=FILES_BODY)
async def search_batch(request: Request, top_k: int | None = TOP_K) -> list[dict]:
    """Several clips as multipart file parts -> one answer per file, in their order; a file that cannot be searched gets its own
    ``error`` and ``status`` and the others still answer (as `cloudtune search` does per clip)."""
    started, svc = time.perf_counter(), _ready(request)
    deadline = asyncio.get_running_loop().time() + svc.settings.request_timeout_s
    with svc.batcher.incoming():
        files = await _read(request, svc, True, deadline)
        decoded = await _decode_each(svc, files, deadline)
    good = [i for i, got in enumerate(decoded) if isinstance(got, Clip)]
    answers = dict(zip(good, await _search(svc, [decoded[i] for i in good], top_k, deadline), strict=True)) if good else {}
    return [{"file": name, **_answer(answers[i], started, decoded[i])} if i in answers else
            {"file": name, "error": decoded[i].reason, "status": decoded[i].status} for i, (name, _) in enumerate(files)]


@v1.get("/models", tags=["ops"])
async def models(request: Request) -> dict:
    """The models this service runs (search, embed, transcribe), each with what it accepts (content types, formats, sample
    rates, durations), its limits (concurrency, queue, timeout) and what it did so far (requests, success rate, latency
    percentiles, throughput), or why it is not available."""
    return {"models": await _service(request).models.describe()}


@router.get("/healthz", tags=["ops"])
async def healthz() -> dict:
    """The process is alive and answering (the model may still be loading: see /readyz)."""
    return {"status": "ok"}


@router.get("/readyz", tags=["ops"], responses={503: {"description": "the published run is not loaded (yet)"}})
async def readyz(request: Request):
    """The embedder and index are loaded: the run served, its embedder, index kind and size (and ``swap_error`` when the last
    published run could not be loaded: the one named here still serves)."""
    svc = _service(request)
    if not svc.ready:
        return JSONResponse({"ready": False, "detail": svc.error or "loading the published run"}, 503)
    return {"ready": True, **served(svc.serving.searcher)} | ({"swap_error": svc.serving.swap_error} if svc.serving.swap_error else {})


@router.get("/metrics", tags=["ops"])
async def metrics(request: Request) -> Response:
    """Prometheus text format (see pipeline/api/metrics.py for the series)."""
    body, content_type = _service(request).metrics.render()
    return Response(body, media_type=content_type)


v1.include_router(embed.router)
v1.include_router(transcribe.router)
router.include_router(v1)
