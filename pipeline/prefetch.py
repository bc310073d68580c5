"""Read ahead in threads: the next items are decoded while the current ones are processed."""

from __future__ import annotations


def prefetch(fn, items: list, depth: int = 4, workers: int = 2):
    """Yield ``(item, fn(item) or the exception it raised)`` in order, computing up to ``depth`` ahead in threads.

    Audio decoding (libsndfile via cffi) releases the GIL, so reading the next tracks overlaps with
    encoding the current ones; memory stays bounded by ``depth`` tracks.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    def call(item):
        try:
            return fn(item)
        except Exception as exc:  # handed to the caller, which records it per item
            return exc

    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append((item, pool.submit(call, item)))
            if len(pending) >= depth:
                head, fut = pending.popleft()
                yield head, fut.result()
        while pending:
            head, fut = pending.popleft()
            yield head, fut.result()
