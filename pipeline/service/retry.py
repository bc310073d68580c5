"""Retry with exponential backoff and jitter, for retryable errors only."""

from __future__ import annotations

import logging
import random
import time
from typing import Callable, TypeVar

from pipeline.errors import one_line

T = TypeVar("T")
log = logging.getLogger(__name__)


def backoff_delay(attempt: int, base: float, maximum: float, rand: Callable[[], float] = random.random) -> float:
    """Delay before retry ``attempt`` (1, 2, ...): base * 2^(attempt-1), capped, with "equal jitter" (half fixed, half random)."""
    delay = min(maximum, base * 2 ** (attempt - 1))
    return delay / 2 + rand() * delay / 2


def retry(fn: Callable[[], T], retries: int, retryable: Callable[[BaseException], bool], base_delay: float, max_delay: float,
          sleep: Callable[[float], None] = time.sleep, rand: Callable[[], float] = random.random,
          on_retry: Callable[[int, BaseException, float], None] | None = None) -> T:
    """Call ``fn`` up to ``1 + retries`` times. An error for which ``retryable(exc)`` is false is raised at once;
    after the last attempt the last error is raised."""
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            attempt += 1
            if attempt > retries or not retryable(exc):
                raise
            delay = backoff_delay(attempt, base_delay, max_delay, rand)
            log.warning("retry %d/%d in %.2f s after %s: %s", attempt, retries, delay, type(exc).__name__, one_line(exc)[:200])
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            sleep(delay)
