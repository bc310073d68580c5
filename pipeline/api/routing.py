"""The model table: which model answers a request. Each route asks :meth:`Models.pick` for a model of its task that accepts
what it knows of the request (its content type first; then a clip's container and length), by what each model declares
(:class:`~pipeline.api.worker_models.Accepts`). The refusals name the reason: no model configured for the task 501, a content
type or container none takes 415, a length outside every model's limits 422 (naming the limit and its key), none started
yet 503. Of several models that accept a request, the least loaded one answers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from pipeline.api.uploads import ApiError
from pipeline.api.worker_models import Accepts


class Model(Protocol):
    name: str
    task: str
    route: str
    accepts: Accepts
    unavailable: str | None  # None: configured; else why not (a 501's reason)

    @property
    def ready(self) -> bool: ...

    @property
    def load(self) -> int: ...  # calls queued or running

    def check_ready(self) -> None: ...  # raises the ApiError that says why it cannot answer now

    async def describe(self) -> dict[str, Any]: ...


class Models:
    """The models of one app, in the order /v1/models lists them."""

    def __init__(self, models: Sequence[Model]):
        self.models = list(models)

    def __iter__(self):
        return iter(self.models)

    def pick(self, task: str, content_type: str | None = None, container: str | None = None, duration_s: float | None = None) -> Model:
        """A started model of ``task`` accepting each of the given facts (None: not known yet, not checked), else ApiError."""
        mine = [m for m in self.models if m.task == task]
        configured = [m for m in mine if m.unavailable is None]
        if not configured:
            raise ApiError(501, f"{task}: {'; '.join(m.unavailable for m in mine) if mine else 'no model serves this task'}")
        fits = configured
        if content_type is not None:
            fits = [m for m in fits if content_type in m.accepts.content_types]
            if not fits:
                raise ApiError(415, f"Content-Type {content_type}: expected {configured[0].accepts.wanted}")
        if container is not None:
            taken = sorted({f for m in fits for f in m.accepts.formats})
            fits = [m for m in fits if container in m.accepts.formats]
            if not fits:
                raise ApiError(415, f"{container} audio: {task} takes {', '.join(taken)}")
        if duration_s is not None:
            fits = _by_duration(task, fits, duration_s)
        started = [m for m in fits if m.ready]
        if not started:
            fits[0].check_ready()
        return min(started, key=lambda m: m.load)

    async def describe(self) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(m.describe() for m in self.models)))


def _by_duration(task: str, models: list[Model], seconds: float) -> list[Model]:
    """The models whose limits hold ``seconds``; none: a 422 naming the nearest limit (the lowest minimum, the highest maximum)."""
    long_enough = [m for m in models if m.accepts.min_duration_s is None or seconds >= m.accepts.min_duration_s]
    if not long_enough:
        low = min(models, key=lambda m: m.accepts.min_duration_s)
        raise ApiError(422, f"{seconds:.2f} s of audio; {task} needs at least {low.accepts.min_duration_s:g} s ({low.accepts.min_key})")
    fits = [m for m in long_enough if m.accepts.max_duration_s is None or seconds <= m.accepts.max_duration_s]
    if not fits:
        high = max(long_enough, key=lambda m: m.accepts.max_duration_s)
        raise ApiError(422, f"{seconds:.2f} s of audio; {task} takes at most {high.accepts.max_duration_s:g} s ({high.accepts.max_key})")
    return fits
