"""``POST /v1/embed``: the wav2vec2 JSON contract of `cloudtune embed` over HTTP (same fields, same errors), through the model
service: the model in a worker process, behind retries and a circuit breaker (:mod:`pipeline.service`).

The worker starts with the app when configs/pipeline.yaml ``wav2vec2.model`` is set (and loads the model at once, so the first
call is not the slow one); without a model the route answers 501 with the reason. Calls run on one thread of their own, off
the event loop and apart from the search model's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel

from pipeline.api.uploads import ApiError, max_bytes, media_type, read_body
from pipeline.audio.contract import parse_request
from pipeline.service.breaker import CircuitOpen
from pipeline.service.bridge import RemoteError, WorkerError
from pipeline.service.model_service import ModelService

log = logging.getLogger(__name__)


class EmbedModel:
    """The model service of /v1/embed. ``make``: builds it (None: not configured, ``unavailable`` says why); ``max_seconds``:
    the longest clip (``wav2vec2.max_seconds``), checked before the worker sees it."""

    def __init__(self, make: Callable[[], ModelService] | None, unavailable: str, max_seconds: float, retry_after_s: int):
        self.make, self.unavailable, self.max_seconds, self.retry_after_s = make, unavailable, max_seconds, retry_after_s
        self.service: ModelService | None = None
        self.error: str | None = None  # why the worker did not start
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="embed-model")

    async def start(self) -> None:
        if self.make is None:
            return
        service = self.make()
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, lambda: service.initialize(preload=True))
        except Exception as exc:
            self.error = f"the wav2vec2 worker did not start: {type(exc).__name__}: {' '.join(str(exc).split())}"
            log.error("search api: %s", self.error)
            await asyncio.to_thread(service.dispose)
            return
        self.service = service

    async def stop(self) -> None:
        if self.service is not None:
            await asyncio.to_thread(self.service.dispose)
        self._thread.shutdown(wait=False, cancel_futures=True)

    def check_ready(self) -> ModelService:
        if self.make is None:
            raise ApiError(501, f"embed: {self.unavailable}")
        if self.service is None:
            raise ApiError(503, f"embed: {self.error or 'the wav2vec2 worker is starting'}", {"Retry-After": str(self.retry_after_s)})
        return self.service

    async def describe(self) -> dict:
        """This model for /v1/models: available or why not, and the model service's capabilities and observed figures."""
        head = {"name": "wav2vec2", "task": "embed", "route": "/v1/embed", "available": self.service is not None}
        if self.service is None:
            return head | {"reason": self.unavailable if self.make is None else self.error or "the wav2vec2 worker is starting"}
        # on the model's own thread: capabilities() reads counters that calls update
        return head | await asyncio.get_running_loop().run_in_executor(self._thread, self.service.capabilities)

    async def embed(self, wave: np.ndarray, sr: int) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self.check_ready().process, wave, sr)


class Embedding(BaseModel):
    embedding: list[float]


router = APIRouter(tags=["embed"])
CONTRACT = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["audio"], "properties": {"audio": {"type": "object", "required": ["array", "sampling_rate"], "properties": {
        "array": {"type": "array", "items": {"type": "number"}}, "sampling_rate": {"type": "integer"}}}}}}}}}


@router.post("/embed", response_model=Embedding, openapi_extra=CONTRACT, responses={
    413: {"description": "body over search_api.max_upload_mb"}, 422: {"description": "the reason `cloudtune embed` gives"},
    501: {"description": "no wav2vec2 model configured"}, 503: {"description": "the worker is starting, failing or its circuit is open"}})
async def embed(request: Request) -> dict:
    """``{"audio": {"array": [...], "sampling_rate": N}}`` -> ``{"embedding": [...]}``: the mean of the configured wav2vec2 layer."""
    svc = request.app.state.service
    model: EmbedModel = svc.embed_model
    model.check_ready()
    if media_type(request) not in ("application/json", "application/octet-stream"):
        raise ApiError(415, f"Content-Type {media_type(request)}: expected application/json (the `cloudtune embed` contract)")
    try:
        async with asyncio.timeout(svc.settings.request_timeout_s):
            text = (await read_body(request, max_bytes(svc.settings))).decode("utf-8")
            wave, sr = parse_request(text, model.max_seconds, limit_name="wav2vec2.max_seconds")
            vector = await model.embed(wave, sr)
    except (ValueError, UnicodeDecodeError) as exc:  # the contract's reasons (and the service's duration limit), as the CLI prints them
        raise ApiError(422, " ".join(str(exc).split())) from None
    except RemoteError as exc:
        raise ApiError(503 if exc.retryable else 422, exc.message) from None
    except (CircuitOpen, WorkerError) as exc:
        raise ApiError(503, f"embed: {' '.join(str(exc).split())}", {"Retry-After": str(model.retry_after_s)}) from None
    except TimeoutError:
        raise ApiError(504, f"not answered within {svc.settings.request_timeout_s:g} s (search_api.request_timeout_s)") from None
    return {"embedding": vector.astype(float).tolist()}
