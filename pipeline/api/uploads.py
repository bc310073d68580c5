"""Request bodies in, waveforms out, within the limits of configs/pipeline.yaml ``search_api``; every refusal is an
:class:`ApiError` with its status and a one-line reason (413 too large, 415 not audio, 422 unreadable or too short/long)."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request

from pipeline.audio import io as audio_io
from pipeline.config import SearchApiSettings
from pipeline.errors import one_line

# Content types of a raw clip body; anything soundfile reads (wav, flac, ogg, mp3, aiff) is accepted under each of them.
AUDIO_TYPES = ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "audio/flac", "audio/x-flac", "audio/ogg", "audio/mpeg", "audio/mp3",
               "audio/aiff", "audio/x-aiff", "application/octet-stream")
MULTIPART = "multipart/form-data"
CLIP_WANTED = "an audio body (audio/wav, audio/flac, audio/ogg, audio/mpeg, application/octet-stream) or multipart field 'file'"
CONTAINERS = ("WAV", "FLAC", "OGG", "MP3", "AIFF")  # what audio_io.sniff_container names, all of which the audio loader reads
# The OpenAPI request body of a route taking one clip (/v1/search, /v1/transcribe)
CLIP_BODY = {"requestBody": {"required": True, "content": {
    **{t: {"schema": {"type": "string", "format": "binary"}} for t in AUDIO_TYPES},
    MULTIPART: {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}, "required": ["file"]}}}}}


class ApiError(Exception):
    """A request refused for a reason the caller can act on: HTTP ``status``, a one-line ``reason``, extra ``headers``."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


def max_bytes(settings: SearchApiSettings) -> int:
    return int(settings.max_upload_mb * 1024 * 1024)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``limit`` bytes (by its Content-Length, else while reading)."""
    too_large = ApiError(413, f"request body over the {limit / 1024 / 1024:g} MB limit (search_api.max_upload_mb)")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:  # nobody to answer; counted as a client error, not logged as a failure of ours
        raise ApiError(400, "the client disconnected during the upload") from None
    return b"".join(chunks)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "application/octet-stream").split(";")[0].strip().lower()


async def uploads(request: Request, settings: SearchApiSettings, many: bool) -> list[tuple[str, bytes]]:
    """The clips of a request as (name, bytes): the raw body (one clip), or the multipart field ``file`` (one clip; ``many``:
    every file part, in their order, at most ``search_api.max_files``)."""
    kind = media_type(request)
    if kind != MULTIPART and (many or kind not in AUDIO_TYPES):
        wanted = "multipart/form-data with file parts" if many else CLIP_WANTED
        raise ApiError(415, f"Content-Type {kind}: expected {wanted}")
    body = await read_body(request, max_bytes(settings))
    if kind != MULTIPART:
        return [("body", body)]
    return await _form_files(request, body, settings, many)


async def _form_files(request: Request, body: bytes, settings: SearchApiSettings, many: bool) -> list[tuple[str, bytes]]:
    sent = False

    async def replay():  # the body already read (within the limit), handed to the form parser
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=settings.max_files, max_fields=settings.max_files)
    except Exception as exc:  # starlette's HTTPException (a malformed form, too many files) and the parser's own errors
        detail = str(getattr(exc, "detail", None) or exc)
        raise ApiError(422, f"multipart body refused: {' '.join(detail.split()) or type(exc).__name__}") from None
    try:
        files = [(key, v) for key, v in form.multi_items() if isinstance(v, UploadFile)]
        if not many:
            files = [(k, v) for k, v in files if k == "file"][:1]
        if not files:
            raise ApiError(422, "no file part in the form" + ("" if many else " (send the clip as field 'file')"))
        return [(v.filename or key, await v.read()) for key, v in files]
    finally:
        await form.close()


def probe(data: bytes) -> tuple[str, float]:
    """One clip's container (one of :data:`CONTAINERS`) and length in seconds, from its header (no decoding): 422 for an
    empty body or one libsndfile cannot open, 415 for bytes that are no audio file."""
    if not data:
        raise ApiError(422, "empty body: send the audio clip")
    container = audio_io.sniff_container(data[:16])
    if container is None:
        raise ApiError(415, "not an audio file (no WAV, FLAC, OGG, MP3 or AIFF header)")
    try:
        return container, sf.info(io.BytesIO(data)).duration
    except Exception as exc:  # libsndfile's and the decoders' errors on arbitrary bytes all mean the same to the caller
        raise _unreadable(exc) from None


def _unreadable(exc: Exception) -> ApiError:
    return ApiError(422, f"not a readable audio file ({one_line(exc) or type(exc).__name__})")


def decode(data: bytes, sample_rate: int, settings: SearchApiSettings) -> np.ndarray:
    """One clip's bytes as mono float32 at ``sample_rate`` (the project's audio loader), within ``min_clip_s``/``max_clip_s``.
    Runs in a thread (it is CPU work)."""
    _, duration = probe(data)
    if duration > settings.max_clip_s:
        raise ApiError(422, f"{duration:.2f} s of audio; a query may be at most {settings.max_clip_s:g} s (search_api.max_clip_s)")
    try:
        wave, _ = audio_io.load(io.BytesIO(data), sr=sample_rate)
    except Exception as exc:
        raise _unreadable(exc) from None
    seconds = len(wave) / sample_rate
    if seconds < settings.min_clip_s:
        raise ApiError(422, f"{seconds:.2f} s of audio; a query needs at least {settings.min_clip_s:g} s (search_api.min_clip_s)")
    if seconds > settings.max_clip_s:
        raise ApiError(422, f"{seconds:.2f} s of audio; a query may be at most {settings.max_clip_s:g} s (search_api.max_clip_s)")
    if not np.isfinite(wave).all():
        raise ApiError(422, "the audio holds NaN or infinite samples")
    return wave
