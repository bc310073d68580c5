"""What the HTTP service tests share (tests/test_search_api.py, tests/test_search_api_models.py): a real uvicorn server in
a thread on a free loopback port, and a tiny evaluated run to serve."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import uvicorn

from pipeline.audio.synth import build_catalog
from pipeline.steps.evaluation import evaluate
from pipeline.steps.ingest import ingest
from pipeline.steps.tokens import tokenize
from pipeline.steps.training import make_splits

ENV = {"CLOUDTUNE__RVQ__LEVELS": "2", "CLOUDTUNE__RVQ__CODEBOOK_SIZE": "16", "CLOUDTUNE__RVQ__KMEANS_ITERS": "4",
       "CLOUDTUNE__QUERIES__PER_TRACK": "1", "CLOUDTUNE__QUERIES__PLAN": "tiny", "CLOUDTUNE__QUERIES__PLANS": "{tiny: {lengths_s: [2], sets: {clean: clean}}}",
       "CLOUDTUNE__LATENCY__SINGLE_QUERIES": "2", "CLOUDTUNE__LATENCY__BATCH_SIZE": "4", "CLOUDTUNE__EVALUATION__CATALOG_VAE": "false"}


def evaluated_run(src: Path, run_id: str, catalog: str, seed: int) -> Path:
    """6 demo tracks (8 s, 22.05 kHz mono) synthesized into ``src``, ingested as ``catalog``, split from tiny rvq tokens,
    mel-stats embedded and flat-indexed by a tiny evaluation of ``run_id`` (with :data:`ENV` set); returns ``src``."""
    src = build_catalog(src, tracks=6, seconds=8, seed=seed, sample_rate=22050, channels=1, shared_motif_ratio=0.5)
    ingest([src], catalog=catalog, workers=1, progress=False)
    make_splits(run_id, [str(tokenize("rvq", catalog, progress=False).output_root)])
    evaluate(run_id, embedders=["mel-stats"], index_kinds=["flat"], device="cpu", progress=False)
    return Path(src)


class Server:
    """A real uvicorn server for ``app`` in a thread, on a free loopback port (port 0: the kernel picks it)."""

    def __init__(self, app):
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        for _ in range(600):
            if self.server.started:
                break
            time.sleep(0.05)
        assert self.server.started, "uvicorn did not start"
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"
        return self

    def wait_ready(self, timeout_s: float = 60) -> dict:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            r = httpx.get(self.url + "/readyz")
            if r.status_code == 200:
                return r.json()
            time.sleep(0.05)
        raise AssertionError(f"not ready after {timeout_s} s: {r.json()}")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(15)
        assert not self.thread.is_alive()
