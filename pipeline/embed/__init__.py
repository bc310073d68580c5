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


def embed_spans(embedder: SegmentEmbedder, waves: Sequence[np.ndarray], spans: Sequence[Sequence[tuple[int, int]]]) -> np.ndarray:
    """float32 [segments, dim]: the segments ``spans[i]`` ((start, end) samples) of every ``waves[i]``, in order. An embedder may
    define its own ``embed_spans(waves, spans)`` (the fingerprint resamples each wave once, not each of its overlapping segments);
    otherwise the pieces are cut here and go through ``embed`` in one call."""
    own = getattr(embedder, "embed_spans", None)
    if own is not None:
        return own(waves, spans)
    pieces = [w[a:b] for w, sp in zip(waves, spans, strict=True) for a, b in sp]
    return embedder.embed(pieces) if pieces else np.zeros((0, embedder.dim), np.float32)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


class EmbedderUnavailable(RuntimeError):
    """The embedder cannot be built for this run (no trained checkpoint, no model configured); the message says why."""
