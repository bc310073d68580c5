"""Build a retrieval embedder by name (``--embedder mel-stats|contrastive|wav2vec2``).

The caller reads the settings an embedder needs (the ``wav2vec2:`` and ``moss:`` config sections, the catalog's
``audio.sample_rate``) and passes them in; nothing here reads the config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.embed import EMBEDDERS, EmbedderUnavailable, SegmentEmbedder

if TYPE_CHECKING:
    from pipeline.config import FingerprintInferenceSettings, MossSettings, Wav2Vec2Settings


def get_embedder(name: str, run_id: str | None = None, device: str = "cpu", *, batch_size: int | None = None, wav2vec2: Wav2Vec2Settings | None = None,
                 sample_rate: int | None = None, moss: MossSettings | None = None, fingerprint: FingerprintInferenceSettings | None = None) -> SegmentEmbedder:
    """The named embedder. ``fingerprint`` is the model trained in ``run_id`` (runs/<run_id>/models/fingerprint.pt);
    ``contrastive`` is the one trained in ``run_id`` (runs/<run_id>/models/embedder.pt) behind the
    tokenizer of its training tokens: an rvq codec in this CLOUDTUNE_HOME, or the MOSS model of ``moss`` (the ``moss:``
    config section); ``wav2vec2`` is built from ``wav2vec2`` (the ``wav2vec2:`` config section) for waves at ``sample_rate``
    (the catalog's ``audio.sample_rate``); ``batch_size``: segments per forward pass (index.yaml ``segments.batch_size``);
    ``fingerprint``: how the fingerprint runs on the CPU (fingerprint.yaml ``fingerprint_inference``; backend onnx: the run's
    export runs/<run_id>/models/fingerprint.onnx when there is a current one, or with precision int8 fingerprint.int8.onnx;
    None: torch).
    Raises :class:`EmbedderUnavailable` when the embedder cannot be built here: no trained
    checkpoint, no wav2vec2 settings given or no model in them (skipped with that reason, never replaced by a random model)."""
    if name == "mel-stats":
        from pipeline.embed.mel_stats import MelStatsEmbedder

        if sample_rate is None:
            raise ValueError("get_embedder('mel-stats'): no sample_rate given: pass the catalog's audio.sample_rate")
        return MelStatsEmbedder(sample_rate)
    if name == "contrastive":
        from pipeline import paths
        from pipeline.embed.contrastive import ContrastiveEmbedder

        ckpt = paths.embedder_checkpoint(run_id) if run_id else None
        if ckpt is None or not ckpt.exists():
            raise EmbedderUnavailable(f"embedder contrastive: no trained embedder at {ckpt} (run `cloudtune train embedder --run-id {run_id}` first)")
        if batch_size is None:
            raise ValueError("get_embedder('contrastive'): no batch_size given: pass configs/index.yaml segments.batch_size")
        return ContrastiveEmbedder(ckpt, device, batch_size, moss=moss)
    if name == "fingerprint":
        from pipeline import paths
        from pipeline.embed.fingerprint import FingerprintEmbedder

        ckpt = paths.fingerprint_checkpoint(run_id) if run_id else None
        if ckpt is None or not ckpt.exists():
            raise EmbedderUnavailable(f"embedder fingerprint: no trained model at {ckpt} (run `cloudtune train fingerprint --run-id {run_id}` first)")
        if batch_size is None or sample_rate is None:
            raise ValueError("get_embedder('fingerprint'): pass batch_size (index.yaml segments.batch_size) and the catalog's audio.sample_rate")
        use_onnx = fingerprint is not None and fingerprint.backend == "onnx"
        int8 = use_onnx and fingerprint.precision == "int8"
        return FingerprintEmbedder(ckpt, device, batch_size, sample_rate, onnx=paths.fingerprint_onnx(run_id) if use_onnx else None,
                                   threads=fingerprint.threads if fingerprint else 0, hop_s=fingerprint.hop_s if fingerprint else None,
                                   int8=paths.fingerprint_onnx(run_id, "int8") if int8 else None)
    if name == "wav2vec2":
        if wav2vec2 is None:
            raise EmbedderUnavailable("embedder wav2vec2: no wav2vec2 settings were given (the caller passes the wav2vec2: config section)")
        if sample_rate is None and wav2vec2.model:
            raise ValueError("get_embedder('wav2vec2'): no sample_rate given: pass the catalog's audio.sample_rate")
        from pipeline.embed.wav2vec2 import get_wav2vec2_embedder
        from pipeline.models.wav2vec2 import Wav2Vec2NotConfigured

        try:
            return get_wav2vec2_embedder(wav2vec2, sample_rate, device)
        except Wav2Vec2NotConfigured as exc:
            raise EmbedderUnavailable(str(exc)) from None
    raise ValueError(f"--embedder {name!r}: expected one of {', '.join(EMBEDDERS)}")
