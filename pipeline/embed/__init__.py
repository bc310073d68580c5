"""Segment embedders: audio in, one L2-normalized vector per segment out.

Every retrieval embedder (``mel-stats`` baseline, the trained ``contrastive`` token embedder, ``wav2vec2``)
implements :class:`SegmentEmbedder`, so the catalog embedding, the FAISS indexes, the evaluation and
``cloudtune search`` treat them alike. Waveforms come in as mono float32 at ``sample_rate`` (the
canonical 24 kHz of ingested audio); an embedder that needs another rate resamples inside ``embed``.

This package's root holds only the protocol and what every embedder shares; ``pipeline.embed.registry.get_embedder``
builds one by name, and each embedder lives in a module of its own (``mel_stats``, ``contrastive``, ``wav2vec2``).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from pipeline.names import EMBEDDERS as EMBEDDERS  # re-exported; written once, in pipeline/names.py


@runtime_checkable
class SegmentEmbedder(Protocol):
    name: str  # "mel-stats" | "contrastive" | "wav2vec2"
    dim: int  # length of every output vector
    sample_rate: int  # rate of the waveforms ``embed`` takes

    def embed(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Mono float32 waveforms (any lengths) -> float32 [len(waves), dim], rows L2-normalized."""
        ...

    def manifest(self) -> dict[str, Any]:
        """What identifies the vectors: name, dim, and the model/version they came from (index manifests check it)."""
        ...


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


class EmbedderUnavailable(RuntimeError):
    """The embedder cannot be built for this run (no trained checkpoint, no model configured); the message says why."""
