"""The HTTP search service of `cloudtune serve` (docs/search_api.md): an entry point beside the CLI, over the published run.

- ``app``: the FastAPI app factory (loading the published run in the background, readiness, errors, metrics middleware);
- ``routes``: ``POST /v1/search``, ``POST /v1/search:batch``, ``/healthz``, ``/readyz``, ``/metrics``;
- ``embed``: ``POST /v1/embed``, the wav2vec2 contract of `cloudtune embed` through the model service;
- ``transcribe``: ``POST /v1/transcribe``, speech recognition through the model service (`cloudtune asr infer --isolated`);
- ``worker_models``: a model behind model-service workers (concurrency limit, queue, timeout, figures) and what it accepts;
- ``routing``: the model table, picking a model of a task that accepts the request; ``search_model``: search in that table;
- ``uploads``: reading a request body within its size limit and decoding a clip within its length limits;
- ``batching``: concurrent clips queued and searched together on one model thread;
- ``serving``: the run in service, and its hot swap when another run is published;
- ``metrics``: the Prometheus series;
- ``auth``: the API key rule (required beyond loopback, Bearer, compared in constant time).

Settings come in as arguments (configs/pipeline.yaml ``search_api``, read by `pipeline/cli/serve.py`); the search itself is
:class:`pipeline.search.Searcher`'s, so the answers are those of `cloudtune search --json`.
"""
