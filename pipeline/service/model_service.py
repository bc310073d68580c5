"""ModelService: one model behind a uniform interface, in this process or isolated in a worker process.

``initialize`` starts the backend, ``process`` returns the embedding of a clip, ``analyze`` the embedding plus
facts about the clip, ``dispose`` stops it. Every call goes through retries (retryable errors only: a crash,
a hang, a worker-side failure) and a circuit breaker, and is timed: ``capabilities()`` reports what the
handler accepts together with the observed latency p50/p95, throughput, success rate and peak memory.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

import numpy as np

from pipeline.config import ServiceSettings
from pipeline.service import protocol
from pipeline.service.breaker import CircuitBreaker
from pipeline.service.bridge import RemoteError, WorkerBridge, is_retryable, worker_command
from pipeline.service.retry import retry
from pipeline.service.worker import load_handler, proc_memory_mb

log = logging.getLogger(__name__)


class InProcessBackend:
    """The handler in this process, with the bridge's call shape (no timeout or crash isolation)."""

    def __init__(self, handler: str, init: dict[str, Any]):
        self.spec, self.init = handler, init
        self.handler: Any = None
        self.restarts = 0
        self.pid = None

    def start(self) -> None:
        if self.handler is None:
            self.handler = load_handler(self.spec, self.init)

    def request(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        self.start()
        if method == "ping":
            return {"in_process": True, **proc_memory_mb()}
        try:
            return getattr(self.handler, method)(**(params or {}))
        except Exception as exc:
            error = protocol.error_reply(None, exc)["error"]
            raise RemoteError(error["type"], error["message"], error["retryable"]) from exc

    def health_check(self) -> dict[str, Any]:
        return {"ok": True, **self.request("ping")}

    def dispose(self) -> None:
        self.handler = None


class ModelService:
    def __init__(self, handler: str, init: dict[str, Any] | None, settings: ServiceSettings, isolated: bool = True, env: dict[str, str] | None = None,
                 command: list[str] | None = None, name: str = "model-service"):
        """``handler``: "module:Class" of the handler; ``init``: its constructor kwargs; ``settings``: configs/pipeline.yaml ``service``."""
        self.settings = s = settings
        self.name, self.isolated = name, isolated
        if isolated:
            self.backend: Any = WorkerBridge(command or worker_command(handler, init), env=env, start_timeout=s.start_timeout_s,
                                             request_timeout=s.request_timeout_s, health_timeout=s.health_timeout_s, name=name)
        else:
            self.backend = InProcessBackend(handler, init or {})
        self.breaker = CircuitBreaker(s.breaker_max_failures, s.breaker_reset_s, counts=is_retryable, name=name)
        self.latencies: collections.deque[float] = collections.deque(maxlen=s.latency_window)
        self.counts = collections.Counter()
        self.busy_s = 0.0
        self.audio_s = 0.0
        self.handler_caps: dict[str, Any] = {}
        self.initialized = False
        self._lock = threading.Lock()

    # --- lifecycle ------------------------------------------------------------------------------

    def initialize(self, preload: bool = False) -> dict[str, Any]:
        """Start the backend and read the handler's capabilities; ``preload`` also loads the model now rather than on first use."""
        self.backend.start()
        self.handler_caps = self.call("capabilities", record=False)
        if preload:
            self.call("load", record=False)
            self.handler_caps = self.call("capabilities", record=False)
        self.initialized = True
        return self.capabilities()

    def dispose(self) -> None:
        self.backend.dispose()
        self.initialized = False

    def __enter__(self) -> ModelService:
        self.initialize()
        return self

    def __exit__(self, *exc) -> None:
        self.dispose()

    # --- work -----------------------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None, record: bool = True) -> Any:
        """One request through the retries and the circuit breaker; counted and timed unless ``record`` is false."""
        s = self.settings
        t0 = time.perf_counter()
        try:
            result = retry(lambda: self.breaker.call(self.backend.request, method, params, timeout), s.retries, is_retryable,
                           s.backoff_base_s, s.backoff_max_s, on_retry=lambda *_: self.counts.update(["retries"]))
        except Exception:
            if record:
                self.counts.update(["requests", "failures"])
            raise
        elapsed = time.perf_counter() - t0
        if not record:
            return result
        with self._lock:
            self.counts.update(["requests", "successes"])
            self.latencies.append(elapsed)
            self.busy_s += elapsed
        return result

    def _audio_call(self, method: str, audio: np.ndarray, sampling_rate: int) -> dict[str, Any]:
        array = np.asarray(audio, dtype=np.float32)
        limit = self.handler_caps.get("max_duration_s")
        if limit is not None and sampling_rate > 0 and array.size / sampling_rate > limit:
            self.counts.update(["requests", "failures", "rejected"])
            raise ValueError(f"audio: {array.size / sampling_rate:.1f} s is over the service's {limit:g} s limit")
        result = self.call(method, {"array": array, "sampling_rate": sampling_rate})
        if sampling_rate > 0:
            self.audio_s += array.size / sampling_rate
        return result

    def process(self, audio: np.ndarray, sampling_rate: int) -> np.ndarray:
        """The clip's embedding (float32 [dim])."""
        return np.asarray(self._audio_call("embed", audio, sampling_rate)["embedding"], dtype=np.float32)

    def analyze(self, audio: np.ndarray, sampling_rate: int) -> dict[str, Any]:
        """The embedding plus duration, level, peak and the model's frame count."""
        return self._audio_call("analyze", audio, sampling_rate)

    def health(self) -> dict[str, Any]:
        return self.backend.health_check()

    # --- reporting ------------------------------------------------------------------------------

    def capabilities(self) -> dict[str, Any]:
        with self._lock:  # calls on other threads append to the window while this reads it
            lat = np.asarray(self.latencies, dtype=np.float64) * 1e3
            requests, successes = self.counts["requests"], self.counts["successes"]
        memory = {"service_peak_rss_mb": proc_memory_mb().get("peak_rss_mb")}
        if self.isolated and self.backend.pid is not None:
            memory["worker_peak_rss_mb"] = proc_memory_mb(self.backend.pid).get("peak_rss_mb")
        return {
            **self.handler_caps,
            "isolated": self.isolated,
            "requests": requests,
            "success_rate": successes / requests if requests else None,
            "retries": self.counts["retries"],
            "restarts": self.backend.restarts,
            "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else None,
            "latency_ms_p95": float(np.percentile(lat, 95)) if lat.size else None,
            "throughput_rps": successes / self.busy_s if self.busy_s else None,
            "audio_seconds_per_s": self.audio_s / self.busy_s if self.busy_s else None,
            "breaker": self.breaker.state,
            **memory,
        }
