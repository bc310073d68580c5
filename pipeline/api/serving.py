"""The published run in service, and its hot swap.

:class:`Serving` answers each model batch with the searcher current when the batch starts, so a swap falls between two
batches, never inside one, and every answer names the run that gave it. :func:`watch` polls the published record; when a
run is published (`cloudtune publish`, the nightly DAG), it loads the new embedder and index in a thread while the old
ones keep answering, then swaps them in with one assignment. A run that fails to load, or a published record that cannot be
read, is logged and reported on /readyz (``swap_error``), and the old run stays in service.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.audio import io as audio_io
from pipeline.errors import one_line
from pipeline.search import Searcher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Clip:
    """A decoded query: its wave and the rate it was decoded at (that of the searcher in service then)."""

    wave: np.ndarray
    sample_rate: int


class Observed:
    """What the model calls did: clips, batches, failures, busy time and a window of batch latencies; summarized with the
    field names of ``ModelService.capabilities()`` so /v1/models lists both models alike."""

    def __init__(self, window: int = 1000):
        self.latencies: collections.deque[float] = collections.deque(maxlen=window)
        self.clips = self.batches = self.failures = 0  # failures: clips of failed batches
        self.busy_s = self.audio_s = 0.0
        self._lock = threading.Lock()

    def record(self, seconds: float, clips: int, audio_s: float, ok: bool) -> None:
        with self._lock:
            self.batches += 1
            self.clips += clips
            self.failures += 0 if ok else clips
            self.busy_s += seconds
            self.audio_s += audio_s if ok else 0.0
            self.latencies.append(seconds)

    def summary(self) -> dict:
        with self._lock:
            lat = np.asarray(self.latencies, dtype=np.float64) * 1e3
            return {"requests": self.clips, "batches": self.batches, "success_rate": 1 - self.failures / self.clips if self.clips else None,
                    "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else None,  # per model batch
                    "latency_ms_p95": float(np.percentile(lat, 95)) if lat.size else None,
                    "throughput_rps": (self.clips - self.failures) / self.busy_s if self.busy_s else None,  # clips per busy second
                    "audio_seconds_per_s": self.audio_s / self.busy_s if self.busy_s else None}


class Serving:
    """The searcher in service (``searcher``), the published record's stamp it was loaded for (``stamp``), and what its calls
    did (``observed``)."""

    def __init__(self, searcher: Searcher, stamp: str | None):
        self.searcher, self.stamp = searcher, stamp
        self.swap_error: str | None = None  # why the last published run could not be swapped in
        self.observed = Observed()

    def search(self, clips: list[Clip], top_k: int) -> list[tuple[Searcher, list[dict]]]:
        """Per clip (the searcher that answered, its ``top_k`` hits). Runs on the model thread. A clip decoded for the previous
        searcher at another rate is resampled to this one's."""
        searcher = self.searcher  # one searcher for the whole batch
        rate = searcher.sample_rate
        started = time.perf_counter()
        try:
            waves = [c.wave if c.sample_rate == rate else audio_io.resample(c.wave, c.sample_rate, rate) for c in clips]
            answers = [(searcher, hits) for hits in searcher.search(waves, top_k)]
        except Exception:
            self.observed.record(time.perf_counter() - started, len(clips), 0.0, ok=False)
            raise
        self.observed.record(time.perf_counter() - started, len(clips), sum(len(w) for w in waves) / rate, ok=True)
        return answers


async def watch(serving: Serving, load_searcher: Callable[[], Searcher], stamp: Callable[[], str | None], poll_s: float,
                on_swap: Callable[[Searcher], None]) -> None:
    """Every ``poll_s``, compare ``stamp()`` (the published record's) with the one in service; on a change, load the new
    searcher in a thread and swap it in (``on_swap`` then). Runs until cancelled."""
    failed: str | None = None  # a stamp that failed to load is not retried until the next publish
    while True:
        await asyncio.sleep(poll_s)
        try:
            current = await asyncio.to_thread(stamp)
        except Exception as exc:  # published.json unreadable (truncated, hand-edited): keep serving, say why, keep polling
            reason = f"published record not read: {one_line(exc)}"
            if reason != serving.swap_error:
                log.error("search api: %s; still serving run %s", reason, serving.searcher.run_id)
            serving.swap_error = reason
            continue
        if serving.swap_error and serving.swap_error.startswith("published record not read: "):
            serving.swap_error = None  # readable again; a stamp that failed to load keeps its own error below
        if current is None or current in (serving.stamp, failed):
            continue
        try:
            searcher = await asyncio.to_thread(load_searcher)
        except Exception as exc:
            failed = current
            serving.swap_error = f"run published at {current} not loaded: {type(exc).__name__}: {one_line(exc)}"
            log.error("search api: %s; still serving run %s", serving.swap_error, serving.searcher.run_id)
            continue
        old = serving.searcher
        serving.searcher, serving.stamp, serving.swap_error = searcher, current, None
        on_swap(searcher)
        log.info("search api: swapped run %s (%s, %s) for run %s (%s, %s)", searcher.run_id, searcher.embedder.name, searcher.index_kind,
                 old.run_id, old.embedder.name, old.index_kind)
