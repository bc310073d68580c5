"""Hub scores: how near each catalog segment lies to what noise embeds to.

A query segment that carries more noise than music embeds near noise, and so near the catalog segments that lie near noise:
digital silence, a fade, a sustained wash of sound. Those segments are *hubs*: they are the nearest neighbour of many unrelated
queries and draw wrong first answers (bench/query_confusions.py shows them). A hub's similarity to a query says less than another
segment's, so the matcher discounts it, as cross-domain similarity local scaling (CSLS; Conneau et al., "Word translation without
parallel data", ICLR 2018) discounts a word by its mean similarity to its nearest neighbours of the other side:

    score(query segment q, catalog segment c) = q . c - search.hub_penalty x hub(c)

where hub(c) is the mean of c's ``k`` highest similarities to *probes*: the embeddings of generated white, pink and brown noise
(configs/index.yaml ``hubs``). Pieces of real background recordings as probes, beside or instead of these, measured no better
(bench/RESULTS.md "Hubs"), and generated noise needs nothing fetched. The scores are written beside the catalog's vectors
(``hubness.npy``, by :func:`pipeline.embed.catalog.embed_catalog`) and subtracted by :func:`pipeline.index.match.match_query`.
"""

from __future__ import annotations

import numpy as np

from pipeline.audio import degrade
from pipeline.embed import SegmentEmbedder

PROBE_RMS = 0.1  # -20 dBFS: well inside every embedder's input range (the fingerprint front end normalizes the level anyway)
CHUNK = 32768  # catalog rows per product: [CHUNK, probes] float32 stays a few tens of MB


def probe_waves(n_samples: int, per_color: int, seed: int) -> list[np.ndarray]:
    """``per_color`` seeded clips of each noise color (white, pink, brown), ``n_samples`` long at level ``PROBE_RMS``."""
    rng = np.random.default_rng([seed, 4242])
    return [degrade.colored_noise(n_samples, color, rng) * np.float32(PROBE_RMS) for color in degrade.NOISE_COLORS for _ in range(per_color)]


def hub_scores(vectors: np.ndarray, probes: np.ndarray, k: int) -> np.ndarray:
    """float32 [N]: each row of ``vectors``' mean of its ``k`` highest dot products with the rows of ``probes`` (all of them
    when there are fewer)."""
    k = min(k, len(probes))
    out = np.empty(len(vectors), np.float32)
    for a in range(0, len(vectors), CHUNK):
        sims = np.asarray(vectors[a : a + CHUNK], np.float32) @ probes.T
        top = np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:] if k < sims.shape[1] else sims
        out[a : a + CHUNK] = top.mean(1)
    return out


def catalog_hubness(embedder: SegmentEmbedder, vectors: np.ndarray, window_s: float, settings) -> tuple[np.ndarray, dict]:
    """(hub score of every row of ``vectors``, what was measured) for a catalog embedded by ``embedder`` in windows of
    ``window_s``; ``settings``: configs/index.yaml ``hubs``."""
    waves = probe_waves(round(window_s * embedder.sample_rate), settings.noise_probes, settings.seed)
    scores = hub_scores(vectors, np.asarray(embedder.embed(waves), np.float32), settings.k)
    return scores, {"probes": len(waves), "mean": round(float(scores.mean()), 4) if len(scores) else None}
