"""``POST /v1/transcribe``: one clip's text, from the speech-recognition model service (the ``asr`` handler in a worker process,
configs/asr.yaml's backend; `cloudtune asr infer --isolated` runs the same), as a
:class:`~pipeline.api.worker_models.WorkerModel` with ``search_api.transcribe_concurrency``, ``transcribe_queue_size`` and
``transcribe_timeout_s``.

The clip is read as /v1/search reads it (raw body or multipart field ``file``) and routed by its content type, then its
container and length from the header (``transcribe_max_s``, ``asr.min_seconds``), before any worker sees it. The handler
reads files, so the clip is written to a private temporary file (mode 0600) for the call and deleted when the call ends,
whether it answered, failed or outlived its timeout. A file the recognizer refuses (silent, NaN, undecodable) is a 422
with its one-line reason, as `cloudtune asr infer` prints it.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from pipeline.api.uploads import AUDIO_TYPES, CLIP_BODY, CLIP_WANTED, CONTAINERS, MULTIPART, ApiError, media_type, probe, uploads
from pipeline.api.worker_models import Accepts
from pipeline.service.model_service import ModelService

TEMP_PREFIX = "cloudtune-transcribe-"  # then the server's pid: the temporary clips of one server are findable (and none should stay)


def accepts(max_s: float, min_s: float, sample_rate: int) -> Accepts:
    """What the speech recognizer takes: an audio clip of any container the loader reads, between ``asr.min_seconds`` and
    ``search_api.transcribe_max_s``."""
    return Accepts((*AUDIO_TYPES, MULTIPART), CLIP_WANTED, CONTAINERS, f"any (resampled to {sample_rate} Hz)", min_duration_s=min_s,
                   max_duration_s=max_s, min_key="asr.min_seconds", max_key="search_api.transcribe_max_s")


class Transcription(BaseModel):
    text: str
    language: str | None
    duration_s: float  # the audio's length
    seconds: float  # the recognizer's time on it (decoding included), as `cloudtune asr infer --json` reports it
    rtf: float | None  # seconds / duration_s
    backend: str
    model: str


router = APIRouter(tags=["transcribe"])
LANGUAGE = Query(None, description="force the language, e.g. English (default configs/asr.yaml asr.language: detected)")


@router.post("/transcribe", response_model=Transcription, openapi_extra=CLIP_BODY, responses={
    408: {"description": "the upload took longer than search_api.request_timeout_s"}, 413: {"description": "body over search_api.max_upload_mb"},
    415: {"description": "not an audio content type or body"}, 422: {"description": "empty, unreadable, silent or NaN audio, or outside its length limits"},
    501: {"description": "transcription off, or the backend not configured"},
    503: {"description": "the worker is starting or failing, or its queue is full (Retry-After)"},
    504: {"description": "not answered within search_api.transcribe_timeout_s"}})
async def transcribe(request: Request, language: str | None = LANGUAGE) -> dict:
    """One clip (raw body, or multipart field ``file``) -> its text: the fields of `cloudtune asr infer --json`, the backend and
    the model."""
    svc = request.app.state.service
    svc.models.pick("transcribe", content_type=media_type(request))
    try:
        async with asyncio.timeout(svc.settings.request_timeout_s):
            [(_, data)] = await uploads(request, svc.settings, many=False)
    except TimeoutError:
        raise ApiError(408, f"the upload took longer than {svc.settings.request_timeout_s:g} s (search_api.request_timeout_s)") from None
    container, duration_s = await run_in_threadpool(probe, data)
    model = svc.models.pick("transcribe", container=container, duration_s=duration_s)
    row = await model.call(lambda service: _transcribe(service, data, container, language), audio_s=duration_s)
    if row["error"] is not None:
        raise ApiError(422, row["error"])
    caps = model.services[0].handler_caps
    rtf = row["seconds"] / row["duration_s"] if row["duration_s"] else None
    return {"text": row["text"], "language": row["language"], "duration_s": row["duration_s"], "seconds": row["seconds"], "rtf": rtf,
            "backend": caps["backend"], "model": caps["model"]}


def _transcribe(service: ModelService, data: bytes, container: str, language: str | None) -> dict[str, Any]:
    """On the model's thread: the clip written to a private temporary file for the worker to read, deleted when the call ends."""
    fd, path = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=f".{container.lower()}")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return service.call("transcribe", {"files": [path], "language": language})["results"][0]
    finally:
        os.unlink(path)
