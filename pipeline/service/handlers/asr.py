"""The speech-recognition model-service handler: ``transcribe`` (files in, one FileResult dict per file out, in order).

Its spec is :data:`pipeline.service.handlers.ASR`. Requests carry file paths, not audio: the worker runs on the caller's
machine and reads the files itself (decoding, checks and splitting as :func:`pipeline.asr.transcribe.transcribe_files`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pipeline.asr.registry import get_transcriber
from pipeline.asr.transcribe import transcribe_files
from pipeline.config import AsrConfig, ServiceSettings
from pipeline.service.model_service import ModelService

SECTIONS = ("asr", "qwen3_asr", "pocketsphinx")  # what the handler needs of configs/asr.yaml (asr_eval is the evaluation's)


def model_service(cfg: AsrConfig, settings: ServiceSettings) -> ModelService:
    """This handler in a worker process (`cloudtune asr infer --isolated`, the search service's /v1/transcribe): a
    :class:`~pipeline.service.model_service.ModelService` over the sections of ``cfg`` (a configs/asr.yaml
    :class:`~pipeline.config.AsrConfig`, flags applied) with configs/pipeline.yaml ``service`` ``settings``; not started."""
    from pipeline.service import handlers

    return ModelService(handlers.ASR, {"settings": {name: cfg.raw[name] for name in SECTIONS}}, settings, isolated=True, name="asr-worker")


class AsrHandler:
    """Hosts one transcriber, built at start so a missing model fails the start, not the first request.

    ``settings``: the ``asr``, ``qwen3_asr`` and ``pocketsphinx`` sections as JSON objects (``dataclasses.asdict`` of each,
    every key); ``backend``, ``model``, ``device``, ``dtype`` override them as ``cloudtune asr infer``'s flags do."""

    def __init__(self, settings: dict[str, dict[str, Any]], backend: str | None = None, model: str | None = None, device: str | None = None,
                 dtype: str | None = None):
        from pipeline import config

        raw = {name: settings[name] for name in SECTIONS}
        sections = {name: config.section(config.ASR_SECTIONS[name], raw, name) for name in SECTIONS}
        cfg = config.AsrConfig(sections, raw)
        self.settings = sections["asr"]
        self.backend = backend or self.settings.backend
        self.transcriber = get_transcriber(self.backend, cfg, model=model, device=device, dtype=dtype)

    def capabilities(self) -> dict[str, Any]:
        t = self.transcriber
        return {"name": "asr", "backend": t.name, "model": t.model_id, "sample_rate": t.sample_rate, "max_batch": t.max_batch,
                "max_duration_s": None, "formats": ["file path (WAV/FLAC/OGG/MP3/AIFF)"], "methods": ["transcribe", "load"], "loaded": True}

    def load(self) -> dict[str, Any]:
        return {"backend": self.transcriber.name, "model": self.transcriber.model_id}

    def transcribe(self, files: list[str], language: str | None = None, batch_size: int | None = None) -> dict[str, Any]:
        """``{"results": [FileResult fields as a dict, ...]}`` in the order of ``files``; a bad file is a result with ``error``."""
        settings = self.settings if batch_size is None else dataclasses.replace(self.settings, batch_size=batch_size)
        return {"results": [dataclasses.asdict(r) for r in transcribe_files(self.transcriber, files, settings, language=language)]}
