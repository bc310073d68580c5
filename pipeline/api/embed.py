"""``POST /v1/embed``: the wav2vec2 JSON contract of `cloudtune embed` over HTTP (same fields, same errors), through the model
service: the model in a worker process, behind retries and a circuit breaker (:mod:`pipeline.service`), as a
:class:`~pipeline.api.worker_models.WorkerModel` with ``search_api.embed_concurrency``, ``embed_queue_size`` and
``embed_timeout_s``.

The worker starts with the app when configs/pipeline.yaml ``wav2vec2.model`` is set (and loads the model at once, so the first
call is not the slow one); without a model the route answers 501 with the reason.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from pydantic import BaseModel

from pipeline.api.uploads import ApiError, max_bytes, media_type, read_body
from pipeline.api.worker_models import Accepts
from pipeline.audio.contract import parse_request
from pipeline.errors import one_line

JSON_TYPES = ("application/json", "application/octet-stream")


def accepts(max_seconds: float) -> Accepts:
    """What the wav2vec2 model takes: the JSON contract, any sample rate, at most ``wav2vec2.max_seconds``."""
    return Accepts(JSON_TYPES, "application/json (the `cloudtune embed` contract)", ("json-array",), "any (resampled to 16000 Hz)",
                   max_duration_s=max_seconds, max_key="wav2vec2.max_seconds")


class Embedding(BaseModel):
    embedding: list[float]


router = APIRouter(tags=["embed"])
CONTRACT = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["audio"], "properties": {"audio": {"type": "object", "required": ["array", "sampling_rate"], "properties": {
        "array": {"type": "array", "items": {"type": "number"}}, "sampling_rate": {"type": "integer"}}}}}}}}}


@router.post("/embed", response_model=Embedding, openapi_extra=CONTRACT, responses={
    413: {"description": "body over search_api.max_upload_mb"}, 422: {"description": "the reason `cloudtune embed` gives"},
    415: {"description": "not application/json"}, 501: {"description": "no wav2vec2 model configured"},
    503: {"description": "the worker is starting, failing or its circuit is open, or the model's queue is full (Retry-After)"},
    504: {"description": "not answered within search_api.embed_timeout_s"}})
async def embed(request: Request) -> dict:
    """``{"audio": {"array": [...], "sampling_rate": N}}`` -> ``{"embedding": [...]}``: the mean of the configured wav2vec2 layer."""
    svc = request.app.state.service
    model = svc.models.pick("embed", content_type=media_type(request))
    try:
        async with asyncio.timeout(svc.settings.request_timeout_s):
            text = (await read_body(request, max_bytes(svc.settings))).decode("utf-8")
        # the contract's own reasons, as the CLI prints them, and the model's duration limit
        wave, sr = parse_request(text, model.accepts.max_duration_s, limit_name=model.accepts.max_key)
        vector = await model.call(lambda service: service.process(wave, sr), audio_s=len(wave) / sr)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(422, one_line(exc)) from None
    except TimeoutError:
        raise ApiError(504, f"not answered within {svc.settings.request_timeout_s:g} s (search_api.request_timeout_s)") from None
    return {"embedding": vector.astype(float).tolist()}
