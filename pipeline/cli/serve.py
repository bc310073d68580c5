"""`cloudtune serve`: the HTTP search service (pipeline/api/, docs/search_api.md) over the published run, with uvicorn."""

from __future__ import annotations

import argparse
import os

from pipeline import config
from pipeline.cli.common import EXIT_USAGE, CommandError, one_line


def load_searcher(device: str):
    """The published run's Searcher, built from the configs as `cloudtune search` builds it."""
    from pipeline.devices import resolve_device
    from pipeline.search import Searcher
    from pipeline.steps.retrieval import embedder_settings

    return Searcher(config.load_index(), device=resolve_device(device), embedder_settings=embedder_settings(), audio=config.load_pipeline().audio)


def app_from_config():
    """The app of one uvicorn worker (a factory: each worker process loads its own searcher and starts its own model services),
    from configs/pipeline.yaml ``search_api``."""
    from pipeline.api.app import create_app
    from pipeline.api.auth import API_KEY_ENV
    from pipeline.publish import published

    settings = config.load_pipeline().search_api
    return create_app(settings, lambda: load_searcher(settings.device), api_key=os.environ.get(API_KEY_ENV) or None,
                      published_stamp=lambda: (published() or {}).get("published_at"), workers=[embed_model(settings), transcribe_model(settings)])


def embed_model(settings: config.SearchApiSettings):
    """/v1/embed's model, as `cloudtune embed --isolated` builds its model service (configs/pipeline.yaml ``wav2vec2`` and
    ``service``), with the ``search_api.embed_*`` limits; not started here."""
    from dataclasses import asdict

    from pipeline.api import embed
    from pipeline.api.worker_models import WorkerModel
    from pipeline.service import handlers
    from pipeline.service.model_service import ModelService

    data = config.load()
    w2v, service = config.section(config.Wav2Vec2Settings, data, "wav2vec2"), config.section(config.ServiceSettings, data, "service")
    make = (lambda: ModelService(handlers.WAV2VEC2, {"settings": asdict(w2v)}, service, isolated=True, name="wav2vec2-worker")) if w2v.model else None
    return WorkerModel("wav2vec2", "embed", "/v1/embed", make, "no model: set wav2vec2.model (a local wav2vec2 directory or hub id)",
                       embed.accepts(w2v.max_seconds), concurrency=settings.embed_concurrency, queue_size=settings.embed_queue_size,
                       timeout_s=settings.embed_timeout_s, retry_after_s=settings.retry_after_s)


def transcribe_model(settings: config.SearchApiSettings):
    """/v1/transcribe's model, as `cloudtune asr infer --isolated` builds its model service (configs/asr.yaml ``asr``,
    ``qwen3_asr``, ``pocketsphinx`` and configs/pipeline.yaml ``service``), with the ``search_api.transcribe_*`` limits; not
    started here. Not configured (501) when ``search_api.transcribe`` is false or the backend cannot start from the config."""
    from pipeline.api import transcribe
    from pipeline.api.worker_models import WorkerModel
    from pipeline.asr.registry import unconfigured
    from pipeline.service.handlers.asr import model_service

    asr = config.load_asr()
    service = config.section(config.ServiceSettings, config.load(), "service")
    backend = asr.asr.backend
    reason = "off: search_api.transcribe is false" if not settings.transcribe else unconfigured(backend, asr)
    make = (lambda: model_service(asr, service)) if reason is None else None
    return WorkerModel(backend, "transcribe", "/v1/transcribe", make, reason or "",
                       transcribe.accepts(settings.transcribe_max_s, asr.asr.min_seconds, asr.asr.sample_rate),
                       concurrency=settings.transcribe_concurrency, queue_size=settings.transcribe_queue_size,
                       timeout_s=settings.transcribe_timeout_s, retry_after_s=settings.retry_after_s)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from pipeline.api.auth import API_KEY_ENV, check_bind
    from pipeline.devices import limit_malloc_arenas
    from pipeline.search import check_published

    s = config.load_pipeline().search_api
    host, port, workers = args.host or s.host, s.port if args.port is None else args.port, args.workers or s.workers
    try:
        check_bind(host, os.environ.get(API_KEY_ENV) or None)
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    try:  # refuse at once, in one line naming the file, rather than start a service that can never be ready
        record = check_published()
    except ValueError as exc:  # published.json unreadable, an index file truncated, a checkpoint that does not load
        raise CommandError(f"the published run cannot be served: {one_line(exc)}", EXIT_USAGE) from None
    if record is None:
        raise CommandError("no published run to serve (cloudtune evaluate publishes one; cloudtune publish --run-id names one)", EXIT_USAGE)
    # Requests decode on several threads and the model runs on another: OpenMP teams that spin-wait after each parallel region
    # (torch, faiss) then fight over the cores; measured on 2 cores, 5 s clips one at a time: p50 72 ms spinning, 12 ms passive.
    # Set before torch or faiss loads (the worker processes inherit it); a value already in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    limit_malloc_arenas(s.malloc_arenas)  # before the threads start; uvicorn's worker processes inherit it through the environment
    uvicorn.run("pipeline.cli.serve:app_from_config", factory=True, host=host, port=port, workers=workers, log_level="info")
    return 0


def add_commands(sub) -> None:
    """Add `serve` to the ``cloudtune`` parser's subparsers ``sub``."""
    s = sub.add_parser("serve", help="the HTTP search service over the published run (POST /v1/search; docs/search_api.md)")
    s.add_argument("--host", help="address to bind (default configs/pipeline.yaml search_api.host); any other than loopback needs $CLOUDTUNE_API_KEY")
    s.add_argument("--port", type=int, help="TCP port (default search_api.port)")
    s.add_argument("--workers", type=int, help="uvicorn worker processes, each with its own model and index (default search_api.workers)")
    s.set_defaults(func=cmd_serve)
