"""Model service: a model hosted in a worker process behind a JSON-lines bridge, with retries and a circuit breaker.

- ``protocol``: the message format (JSON lines, uuid4 request ids, numpy arrays as base64).
- ``worker``: ``python -m pipeline.service.worker --handler MODULE:FACTORY`` hosts a handler object.
- ``bridge``: :class:`WorkerBridge` spawns the worker, matches replies by id, enforces timeouts, restarts it.
- ``retry``: exponential backoff with jitter, for retryable errors only.
- ``breaker``: :class:`CircuitBreaker` (closed / open / half-open).
- ``model_service``: :class:`ModelService` ties them together: initialize / process / analyze / dispose, capabilities and metrics.
"""
