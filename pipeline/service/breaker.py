"""Circuit breaker: stop calling a failing dependency for a while, then let one trial call through.

closed     calls go through; ``max_failures`` consecutive counted failures open the circuit
open       calls fail at once with :class:`CircuitOpen` until ``reset_timeout`` seconds have passed
half-open  one trial call goes through (others fail fast): success closes the circuit, failure opens it again
"""

from __future__ import annotations

import threading
import time
from typing import Callable, TypeVar

T = TypeVar("T")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitOpen(RuntimeError):
    """The circuit is open: the call was not attempted."""


class CircuitBreaker:
    def __init__(self, max_failures: int, reset_timeout: float, counts: Callable[[BaseException], bool] = lambda exc: True,
                 clock: Callable[[], float] = time.monotonic, name: str = "service"):
        """``max_failures`` and ``reset_timeout``: configs/pipeline.yaml ``service`` (``breaker_max_failures``, ``breaker_reset_s``)."""
        if max_failures < 1 or reset_timeout < 0:
            raise ValueError(f"circuit breaker: max_failures must be >= 1 and reset_timeout >= 0, got {max_failures}, {reset_timeout}")
        self.max_failures, self.reset_timeout, self.counts, self.clock, self.name = max_failures, reset_timeout, counts, clock, name
        self.failures = 0
        self.opened_at: float | None = None
        self.trial_running = False
        self.transitions: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self.opened_at is None:
            return CLOSED
        return HALF_OPEN if self.clock() - self.opened_at >= self.reset_timeout else OPEN

    def _move(self, old: str, new: str) -> None:
        if old != new:
            self.transitions.append((old, new))

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        with self._lock:
            state = self._state()
            if state == OPEN or (state == HALF_OPEN and self.trial_running):
                left = self.reset_timeout - (self.clock() - self.opened_at)  # type: ignore[operator]
                raise CircuitOpen(f"{self.name}: circuit open after {self.failures} failures; next trial in {max(left, 0):.1f} s")
            if state == HALF_OPEN:
                self.trial_running = True
                self._move(OPEN, HALF_OPEN)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._after(state, exc)
            raise
        self._after(state, None)
        return result

    def _after(self, state: str, exc: BaseException | None) -> None:
        with self._lock:
            if state == HALF_OPEN:
                self.trial_running = False
            if exc is not None and self.counts(exc):
                self.failures += 1
                if state == HALF_OPEN or self.failures >= self.max_failures:
                    self._move(state, OPEN)
                    self.opened_at = self.clock()
                return
            if state == HALF_OPEN:
                self._move(HALF_OPEN, CLOSED)
                self.opened_at = None
            self.failures = 0
