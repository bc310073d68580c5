"""Segment embedders: audio in, one L2-normalized vector per segment out.

Every retrieval embedder (``mel-stats`` baseline, the trained ``contrastive`` token embedder, ``wav2vec2``)
implements :class:`SegmentEmbedder`, so the catalog embedding, the FAISS indexes, the evaluation and
``cloudtune search`` treat them alike. Waveforms come in as mono float32 at ``sample_rate`` (the
canonical 24 kHz of ingested audio); an embedder that needs another rate resamples inside ``embed``.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np


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


EMBEDDERS = ("mel-stats", "contrastive", "wav2vec2")


class EmbedderUnavailable(RuntimeError):
    """The embedder cannot be built for this run (no trained checkpoint, no model configured); the message says why."""


def get_embedder(name: str, run_id: str | None = None, device: str = "cpu", batch_size: int = 64) -> SegmentEmbedder:
    """The named embedder; ``contrastive`` is the one trained in ``run_id`` (runs/<run_id>/models/embedder.pt)."""
    if name == "mel-stats":
        from pipeline.embed.mel_stats import MelStatsEmbedder

        return MelStatsEmbedder()
    if name == "contrastive":
        from pipeline import paths
        from pipeline.embed.contrastive import ContrastiveEmbedder

        ckpt = paths.embedder_checkpoint(run_id) if run_id else None
        if ckpt is None or not ckpt.exists():
            raise EmbedderUnavailable(f"embedder contrastive: no trained embedder at {ckpt} (run `cloudtune train embedder --run-id {run_id}` first)")
        return ContrastiveEmbedder(ckpt, device, batch_size)
    if name == "wav2vec2":
        from pipeline.models.wav2vec2 import Wav2Vec2NotConfigured, get_wav2vec2_embedder

        try:
            return get_wav2vec2_embedder(device=device)
        except Wav2Vec2NotConfigured as exc:  # skipped with this reason, never replaced by a random model
            raise EmbedderUnavailable(str(exc)) from None
    raise ValueError(f"--embedder {name!r}: expected one of {', '.join(EMBEDDERS)}")
