"""``wav2vec2``: mean-pooled wav2vec2 hidden states (``pipeline.models.wav2vec2``) as a retrieval embedder.

The catalog's waves come in at its rate (``audio.sample_rate``); the model resamples them to 16 kHz, embeds them in
length-bucketed batches, and the vectors are L2-normalized here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from pipeline.embed import l2_normalize
from pipeline.models.wav2vec2 import Wav2Vec2Features, features_from_settings

if TYPE_CHECKING:
    from pipeline.config import Wav2Vec2Settings


class Wav2Vec2Embedder:
    """The ``wav2vec2`` retrieval embedder (:class:`pipeline.embed.SegmentEmbedder`): catalog-rate waves in,
    L2-normalized mean-pooled wav2vec2 vectors out."""

    name = "wav2vec2"

    def __init__(self, features: Wav2Vec2Features, sample_rate: int, progress: bool = False):
        self.features = features
        self.dim = features.dim
        self.sample_rate = sample_rate
        self.progress = progress

    def embed(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        if not len(waves):
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalize(self.features.embed_batch(waves, self.sample_rate, progress=self.progress))

    def manifest(self) -> dict[str, Any]:
        m = self.features.manifest()
        return {"name": self.name, "sample_rate": self.sample_rate, **m, "version": f"{m['config_sha1']}/layer{m['layer']}"}


def get_wav2vec2_embedder(settings: Wav2Vec2Settings, sample_rate: int, device: str | None = None, progress: bool = False) -> Wav2Vec2Embedder:
    """The ``wav2vec2`` embedder for catalog embedding and evaluation, from the ``wav2vec2:`` config section and the
    catalog's audio rate (``audio.sample_rate``), both read by the caller. Raises
    :class:`pipeline.models.wav2vec2.Wav2Vec2NotConfigured` (one line) when ``settings.model`` is null, so a DAG task or an
    evaluation can skip it with that reason."""
    return Wav2Vec2Embedder(features_from_settings(settings, device), sample_rate=sample_rate, progress=progress)
