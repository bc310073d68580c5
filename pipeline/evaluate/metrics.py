"""Ranking metrics over track-level results."""

from __future__ import annotations

import numpy as np


def ranks(results: list[list[int]], truth: list[int]) -> np.ndarray:
    """1-based rank of the true track in each ranked list, 0 where it is missing."""
    out = np.zeros(len(truth), np.int64)
    for i, (ranked, t) in enumerate(zip(results, truth, strict=True)):
        for r, track in enumerate(ranked, 1):
            if track == t:
                out[i] = r
                break
    return out


def recall_at(r: np.ndarray, k: int) -> float:
    return float(np.mean((r > 0) & (r <= k))) if len(r) else 0.0


def mrr(r: np.ndarray) -> float:
    return float(np.mean(np.where(r > 0, 1.0 / np.maximum(r, 1), 0.0))) if len(r) else 0.0


def offset_hit_rate(results: list[list[tuple[int, float, float]]], truth: list[int], offsets_s: list[float], tolerance_s: float) -> float:
    """The share of queries whose top-1 (track, score, offset_s) is the true track at most ``tolerance_s`` from the true offset."""
    hits = [bool(res) and res[0][0] == t and abs(res[0][2] - o) <= tolerance_s + 1e-6 for res, t, o in zip(results, truth, offsets_s, strict=True)]
    return float(np.mean(hits)) if hits else 0.0


def overlap_at(approx: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Recall@k of an ANN index against the exact one: the share of the exact top-k ids it also returns."""
    hits = [len(set(a[:k]) & set(e[:k]) - {-1}) / max(1, len(set(e[:k]) - {-1})) for a, e in zip(approx, exact, strict=True)]
    return float(np.mean(hits)) if hits else 0.0


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000.0, q)) if seconds else 0.0
