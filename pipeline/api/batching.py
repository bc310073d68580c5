"""Dynamic batching: clips of concurrent requests wait in one bounded queue and are searched together on one model thread.

The first clip of a batch waits at most ``max_wait_s`` for others (up to ``max_batch``), and only while other requests are on
their way (:meth:`Batcher.incoming`: uploading or decoding), so a lone clip goes to the model at once; while the model works
on a batch the next one gathers, so under load batches fill without any wait. A full queue refuses at once (:class:`QueueFull`), never grows.
A request that gave up (timed out, disconnected) has its clips skipped, not searched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

SearchFn = Callable[[list[Any], int], list[Any]]  # (clips, top_k) -> per clip its answer (Serving.search, Searcher.search)


class QueueFull(Exception):
    """The queue has no room for a request's clips."""


@dataclass
class _Job:
    clip: Any
    top_k: int
    future: asyncio.Future


class Batcher:
    """Queue clips with :meth:`submit` (on the event loop); a collector task batches them and runs ``search`` on one thread."""

    def __init__(self, search: SearchFn, max_batch: int, max_wait_s: float, queue_size: int, on_batch: Callable[[int], None] | None = None):
        self.search, self.max_batch, self.max_wait_s, self.queue_size = search, max_batch, max_wait_s, queue_size
        self.on_batch = on_batch or (lambda n: None)
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        self._incoming = 0  # requests reading or decoding their clips: they will submit soon
        self._model = ThreadPoolExecutor(1, thread_name_prefix="search-model")  # one thread: the model is never run twice at once

    def start(self) -> None:
        """Start collecting (call on the running event loop)."""
        self._queue = asyncio.Queue(self.queue_size)
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="search-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._model.shutdown(wait=False, cancel_futures=True)

    def depth(self) -> int:
        """Clips waiting for the model."""
        return self._queue.qsize() if self._queue is not None else 0

    @contextmanager
    def incoming(self) -> Iterator[None]:
        """Around a request's upload and decoding (on the event loop): a forming batch may wait for its clips."""
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1

    async def submit(self, clips: list[Any], top_k: int) -> list[Any]:
        """Per clip its answer for ``top_k``, searched in whatever batches form. Raises QueueFull when the clips do not all fit."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        if self.queue_size - self._queue.qsize() < len(clips):
            raise QueueFull(f"{self._queue.qsize()} clips are waiting (search_api.queue_size {self.queue_size})")
        loop = asyncio.get_running_loop()
        jobs = [_Job(c, top_k, loop.create_future()) for c in clips]
        for job in jobs:
            self._queue.put_nowait(job)
        return list(await asyncio.gather(*(j.future for j in jobs)))  # cancelling the caller cancels these: the jobs are then skipped

    async def _next_batch(self) -> list[_Job]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while len(batch) < self.max_batch:
            if self._queue.empty():
                if not self._incoming:  # no other request on its way: waiting would only add latency
                    break
                try:
                    async with asyncio.timeout_at(deadline):  # a cancelled Queue.get leaves its item in the queue
                        batch.append(await self._queue.get())
                except TimeoutError:
                    break
            else:
                batch.append(self._queue.get_nowait())
        return [j for j in batch if not j.future.done()]

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            self.on_batch(len(batch))
            try:
                results = await loop.run_in_executor(self._model, self._search, batch)
            except Exception as exc:
                if len(batch) == 1:  # a failure fails its own request, never the collector
                    _settle(batch[0], exc=exc)
                    continue
                for job in batch:  # one clip's failure must not fail the others it was batched with: each again, alone
                    try:
                        _settle(job, (await loop.run_in_executor(self._model, self._search, [job]))[0])
                    except Exception as alone:
                        _settle(job, exc=alone)
                continue
            for job, hits in zip(batch, results, strict=True):
                _settle(job, hits)

    def _search(self, batch: list[_Job]) -> list[Any]:
        """One search call per distinct top_k in the batch (usually one), the answers put back in the batch's order."""
        out: list[Any] = [None] * len(batch)
        for k in dict.fromkeys(j.top_k for j in batch):
            rows = [i for i, j in enumerate(batch) if j.top_k == k]
            for i, answer in zip(rows, self.search([batch[i].clip for i in rows], k), strict=True):
                out[i] = answer
        return out


def _settle(job: _Job, answer: Any = None, exc: Exception | None = None) -> None:
    """Answer a job's caller, unless it gave up already."""
    if job.future.done():
        return
    if exc is not None:
        job.future.set_exception(exc)
    else:
        job.future.set_result(answer)
