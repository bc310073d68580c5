"""Hub scores: how near each catalog segment lies to what noise embeds to.

A query segment that carries more noise than music embeds near noise, and so near the catalog segments that lie near noise:
digital silence, a fade, a sustained wash of sound. Those segments are *hubs*: they are the nearest neighbour of many unrelated
queries and draw wrong first answers (bench/query_confusions.py shows them). A hub's similarity to a query says less than another
segment's, so the matcher discounts it, as cross-domain similarity local scaling (CSLS; Conneau et al., "Word translation without
parallel data", ICLR 2018) discounts a word by its mean similarity to its nearest neighbours of the other side:

    score(query segment q, catalog segment c) = q . c - search.hub_penalty x hub(c)

where hub(c) is the mean of c's ``k`` highest similarities to *probes*: the embeddings of generated noise (white, pink, brown)
and of pieces of real background recordings (configs/index.yaml ``hubs``; never the recordings the evaluation uses). The scores are
written beside the catalog's vectors (``hubness.npy``, by :func:`pipeline.embed.catalog.embed_catalog`) and subtracted by
:func:`pipeline.index.match.match_query`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.audio import degrade
from pipeline.embed import SegmentEmbedder

PROBE_RMS = 0.1  # -20 dBFS: well inside every embedder's input range (the fingerprint front end normalizes the level anyway)
CHUNK = 32768  # catalog rows per product: [CHUNK, probes] float32 stays a few tens of MB


def probe_waves(n_samples: int, sr: int, noise_probes: int, background_probes: int, background_dir: Path | None,
                seed: int) -> tuple[list[np.ndarray], dict[str, int]]:
    """``noise_probes`` clips of each noise color and ``background_probes`` pieces of the recordings in ``background_dir`` (none
    when it is missing or empty), each ``n_samples`` long at level ``PROBE_RMS``; with the count of each kind."""
    rng = np.random.default_rng([seed, 4242])
    waves = [degrade.colored_noise(n_samples, color, rng) for color in degrade.NOISE_COLORS for _ in range(noise_probes)]
    counts = {color: noise_probes for color in degrade.NOISE_COLORS}
    recordings = [r for r in degrade.load_background(background_dir, sr) if len(r) >= n_samples] if background_probes and \
        degrade.background_files(background_dir) else []
    for _ in range(background_probes if recordings else 0):
        rec = recordings[rng.integers(len(recordings))]
        start = int(rng.integers(len(rec) - n_samples + 1))
        piece = rec[start : start + n_samples]
        rms = float(np.sqrt(np.mean(np.square(piece, dtype=np.float64))))
        if rms > 1e-5:  # a silent piece of a recording is no probe of background sound (silence is a hub only by the music's side)
            waves.append((piece / rms).astype(np.float32))
    counts["background"] = len(waves) - len(degrade.NOISE_COLORS) * noise_probes
    return [(w * PROBE_RMS).astype(np.float32) for w in waves], counts


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


def catalog_hubness(embedder: SegmentEmbedder, vectors: np.ndarray, window_s: float, settings, root: Path) -> tuple[np.ndarray, dict]:
    """(hub score of every row of ``vectors``, what was measured) for a catalog embedded by ``embedder`` in windows of
    ``window_s``; ``settings``: configs/index.yaml ``hubs``, a relative ``background_dir`` taken from ``root``."""
    sr = embedder.sample_rate
    folder = Path(settings.background_dir) if settings.background_dir else None
    if folder is not None and not folder.is_absolute():
        folder = root / folder
    waves, counts = probe_waves(round(window_s * sr), sr, settings.noise_probes, settings.background_probes, folder, settings.seed)
    probes = np.asarray(embedder.embed(waves), np.float32)
    scores = hub_scores(vectors, probes, settings.k)
    info = {"probes": counts, "k": settings.k, "seed": settings.seed, "background_dir": str(folder) if folder else None,
            "mean": round(float(scores.mean()), 4) if len(scores) else None}
    return scores, info
