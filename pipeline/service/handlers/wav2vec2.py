"""The wav2vec2 model-service handler: ``embed`` (the vector of one clip) and ``analyze`` (the vector plus facts about the clip).

Its spec is :data:`pipeline.service.handlers.WAV2VEC2` (``pipeline.service.handlers.wav2vec2:Wav2Vec2Handler``);
requests carry clips as the audio contract's fields (``array``, ``sampling_rate``; ``pipeline.audio.contract``).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from pipeline.audio import io as audio_io
from pipeline.audio.contract import check_audio
from pipeline.models.wav2vec2 import MODEL_RATE, Wav2Vec2Features, Wav2Vec2NotConfigured, features_from_settings


class Wav2Vec2Handler:
    """What a model-service worker hosts: wav2vec2 embeddings of single clips; loads the model lazily on the first request.

    Settings come through the constructor (the worker's ``--init`` JSON), so the caller decides them: ``settings`` is the
    ``wav2vec2:`` config section as a JSON object (``dataclasses.asdict`` of a :class:`pipeline.config.Wav2Vec2Settings`,
    every key), and ``model``, ``layer``, ``device``, ``max_seconds``, ``dtype`` override it when given."""

    def __init__(self, settings: dict[str, Any], model: str | None = None, layer: int | None = None, device: str | None = None,
                 max_seconds: float | None = None, dtype: str | None = None):
        from pipeline import config

        self.settings = config.section(config.Wav2Vec2Settings, {"wav2vec2": settings}, "wav2vec2", model=model, layer=layer, device=device,
                                       max_seconds=max_seconds, dtype=dtype)
        s = self.settings
        self.model, self.layer, self.device, self.max_seconds = s.model, s.layer, s.device, s.max_seconds
        if not self.model:
            raise Wav2Vec2NotConfigured("wav2vec2: no model configured: pass --model or set wav2vec2.model")
        self._features: Wav2Vec2Features | None = None

    @property
    def features(self) -> Wav2Vec2Features:
        if self._features is None:
            self._features = features_from_settings(self.settings)
        return self._features

    def capabilities(self) -> dict[str, Any]:
        caps = {"name": "wav2vec2", "model": self.model, "max_duration_s": self.max_seconds, "formats": ["json-array", "float32-ndarray"],
                "sample_rates": "any (resampled to 16000 Hz)", "methods": ["embed", "analyze", "load"], "loaded": self._features is not None}
        if self._features is not None:
            caps.update(dim=self._features.dim, device=self._features.device, layer=self._features.layer, layers=self._features.num_layers)
        return caps

    def load(self) -> dict[str, Any]:
        return {"dim": self.features.dim, "device": self.features.device, "dtype": str(self.features.dtype).removeprefix("torch.")}

    def embed(self, array, sampling_rate) -> dict[str, Any]:
        wave, sr = check_audio(array, sampling_rate, self.max_seconds, limit_name="wav2vec2.max_seconds")
        return {"embedding": self.features.embed_one(wave, sr)}

    def analyze(self, array, sampling_rate) -> dict[str, Any]:
        """The embedding plus what a caller wants to know about the clip: duration, level, peak, model frames."""
        wave, sr = check_audio(array, sampling_rate, self.max_seconds, limit_name="wav2vec2.max_seconds")
        t0 = time.perf_counter()
        resampled = self.features.to_model_rate(wave, sr)
        with self.features.cpu_threads():
            embedding = self.features.forward([resampled])[0]
        frames = int(self.features.model._get_feat_extract_output_lengths(torch.tensor(resampled.shape[0])))
        level = audio_io.rms_dbfs(wave)
        return {"embedding": embedding, "duration_s": wave.size / sr, "sampling_rate": sr, "rms_dbfs": level if math.isfinite(level) else None,
                "peak": float(np.abs(wave).max()), "frames": frames, "frame_rate_hz": frames * MODEL_RATE / resampled.shape[0],
                "norm": float(np.linalg.norm(embedding)), "layer": "last" if self.features.layer is None else self.features.layer,
                "compute_ms": (time.perf_counter() - t0) * 1e3}
