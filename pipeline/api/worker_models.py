"""Models behind a model service (:mod:`pipeline.service`): the wav2vec2 of ``/v1/embed``, the speech recognizer of
``/v1/transcribe``; what each declares it accepts (:class:`Accepts`, which :mod:`pipeline.api.routing` checks).

A :class:`WorkerModel` runs ``concurrency`` model services, each its own worker process answering one call at a time, on a
thread pool of that size: at most ``concurrency`` calls run at once, further callers wait in a queue of ``queue_size``, and
beyond it a caller gets 503 with Retry-After at once. A call has ``timeout_s`` from joining the queue to its answer; past it
the caller gets 504, a call still queued is dropped (it never runs) and one already running finishes in its worker, whose
slot stays taken until then (so the limit holds) and whose figures count it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from pipeline.api.serving import Observed
from pipeline.api.uploads import ApiError
from pipeline.errors import one_line
from pipeline.service.breaker import CircuitOpen
from pipeline.service.bridge import RemoteError, WorkerError
from pipeline.service.model_service import ModelService

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Accepts:
    """What a model declares it takes. ``content_types``: of the request; ``wanted``: how a 415 names them; ``formats``: the
    containers read from a clip's first bytes (WAV, FLAC, ...), or what a non-file body holds; ``sample_rates``: in words;
    ``min_duration_s``/``max_duration_s`` (None: no limit) with the config keys that set them (``min_key``, ``max_key``),
    named in a refusal."""

    content_types: tuple[str, ...]
    wanted: str
    formats: tuple[str, ...]
    sample_rates: str = "any"
    min_duration_s: float | None = None
    max_duration_s: float | None = None
    min_key: str = ""
    max_key: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"content_types": list(self.content_types), "formats": list(self.formats), "sample_rates": self.sample_rates,
                "min_duration_s": self.min_duration_s, "max_duration_s": self.max_duration_s}


class WorkerModel:
    """One model behind ``concurrency`` model services. ``make`` builds one (None: not configured, ``unavailable`` says why);
    ``name`` is the model's (``wav2vec2``, ``pocketsphinx``), ``task`` and ``route`` what it serves; ``keys``: where its
    limits are set, named in refusals (``search_api.transcribe`` for ``search_api.transcribe_timeout_s`` ...)."""

    def __init__(self, name: str, task: str, route: str, make: Callable[[], ModelService] | None, unavailable: str, accepts: Accepts, *,
                 concurrency: int = 1, queue_size: int = 0, timeout_s: float = 10.0, keys: str = "", retry_after_s: int = 1):
        self.name, self.task, self.route, self.make, self.accepts = name, task, route, make, accepts
        self.unavailable = None if make is not None else unavailable  # None: configured
        self.concurrency, self.queue_size, self.timeout_s, self.keys = concurrency, queue_size, timeout_s, keys or f"search_api.{task}"
        self.retry_after_s = retry_after_s
        self.services: list[ModelService] = []  # started, one per slot
        self.error: str | None = None  # why the workers did not start
        self.observed = Observed()  # the calls that reached a worker
        self.timeouts = self.busy_refusals = 0
        self._starting: list[ModelService] = []
        self._free: queue.SimpleQueue[ModelService] = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix=f"{task}-model")
        self._lock = threading.Lock()
        self._pending = self._running = 0  # calls queued or running; running

    # --- lifecycle ------------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker and load its model (so the first call is not the slow one); a failure is kept in ``error``."""
        if self.make is None:
            return
        self._starting = [self.make() for _ in range(self.concurrency)]
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(*(loop.run_in_executor(self._pool, lambda s=s: s.initialize(preload=True)) for s in self._starting),
                                       return_exceptions=True)
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            self.error = f"the {self.name} worker did not start: {type(failed).__name__}: {one_line(failed)}"
            log.error("search api: %s", self.error)
            await asyncio.to_thread(self._dispose)
            return
        for service in self._starting:
            self._free.put(service)
        self.services = self._starting
        log.info("search api: %s serves %s with %d worker(s)", self.name, self.route, len(self.services))

    async def stop(self) -> None:
        await asyncio.to_thread(self._dispose)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _dispose(self) -> None:
        starting, self._starting, self.services = self._starting, [], []
        for service in starting:
            service.dispose()

    @property
    def ready(self) -> bool:
        return bool(self.services)

    @property
    def load(self) -> int:
        """Calls queued or running (the router sends a request to the least loaded model of its task)."""
        return self._pending

    def check_ready(self) -> None:
        if self.make is None:
            raise ApiError(501, f"{self.task}: {self.unavailable}")
        if not self.services:
            raise ApiError(503, f"{self.task}: {self.error or f'the {self.name} worker is starting'}", {"Retry-After": str(self.retry_after_s)})

    # --- calls ----------------------------------------------------------------------------------------------------------

    async def call(self, job: Callable[[ModelService], T], audio_s: float = 0.0) -> T:
        """``job(service)`` on a free worker, within the concurrency limit, queue and timeout; ``audio_s``: the seconds of audio
        it handles (for the throughput figures). Raises ApiError: 503 busy (Retry-After), 504 late, and the model service's
        refusals (RemoteError: 422 for bad input, 503 when retryable; a failing worker or open circuit: 503 with Retry-After)."""
        self.check_ready()
        with self._lock:
            if self._pending >= self.concurrency + self.queue_size:
                self.busy_refusals += 1
                raise ApiError(503, f"{self.task}: busy: {self._running} call(s) running and {self._pending - self._running} waiting "
                               f"({self.keys}_concurrency {self.concurrency}, {self.keys}_queue_size {self.queue_size}); retry later",
                               {"Retry-After": str(self.retry_after_s)})
            self._pending += 1
        future: Future[T] = self._pool.submit(self._run, job, audio_s)
        future.add_done_callback(self._done)  # also when cancelled while queued
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except TimeoutError:
            future.cancel()  # still queued: it never runs; running: its worker finishes it
            with self._lock:
                self.timeouts += 1
            raise ApiError(504, f"{self.task}: not answered within {self.timeout_s:g} s ({self.keys}_timeout_s)") from None
        except RemoteError as exc:
            raise ApiError(503 if exc.retryable else 422, exc.message) from None
        except (CircuitOpen, WorkerError) as exc:
            raise ApiError(503, f"{self.task}: {one_line(exc)}", {"Retry-After": str(self.retry_after_s)}) from None

    def _run(self, job: Callable[[ModelService], T], audio_s: float) -> T:
        """On a pool thread: the pool has one thread per worker, so a free worker is always there."""
        service = self._free.get()
        with self._lock:
            self._running += 1
        started, ok = time.perf_counter(), False
        try:
            result = job(service)
            ok = True
            return result
        except RemoteError as exc:
            ok = not exc.retryable  # the model answered, refusing the input: not a failure of the model
            raise
        finally:
            self.observed.record(time.perf_counter() - started, 1, audio_s, ok)
            with self._lock:
                self._running -= 1
            self._free.put(service)

    def _done(self, future: Future) -> None:
        with self._lock:
            self._pending -= 1

    # --- /v1/models -----------------------------------------------------------------------------------------------------

    async def describe(self) -> dict[str, Any]:
        """Name, task, route, what it accepts, its limits; then either why it is not available, or the handler's capabilities
        (backend, model, dim ...), the model services' state (restarts, circuit, worker memory) and the observed figures of
        the calls that reached a worker (requests, success rate, latency p50/p95, throughput)."""
        head = {"name": self.name, "task": self.task, "route": self.route, "available": self.ready, **self.accepts.as_dict(),
                "concurrency": self.concurrency, "queue_size": self.queue_size, "timeout_s": self.timeout_s}
        services = list(self.services)
        if not services:
            return head | {"reason": self.unavailable or self.error or f"the {self.name} worker is starting"}
        caps = await asyncio.to_thread(lambda: [s.capabilities() for s in services])
        states = [c["breaker"] for c in caps]
        with self._lock:
            now = {"in_flight": self._running, "queued": self._pending - self._running, "timeouts": self.timeouts,
                   "busy_refusals": self.busy_refusals}
        rss = [c.get("worker_peak_rss_mb") for c in caps if c.get("worker_peak_rss_mb") is not None]
        return {**services[0].handler_caps, **head, "isolated": all(c["isolated"] for c in caps),
                "restarts": sum(c["restarts"] for c in caps), "retries": sum(c["retries"] for c in caps),
                "breaker": next((b for b in states if b != "closed"), "closed"), "worker_peak_rss_mb": max(rss) if rss else None,
                **now, **self.observed.summary()}
