"""Load on `cloudtune serve` over loopback: throughput and p50/p95/p99 latency at several concurrencies, batching on and off.

    .venv/bin/python bench/serve_load.py [--requests 2000] [--concurrency 1 8 32 64] [--clip-s 5] [--modes batched unbatched]

Serves the published run of $CLOUDTUNE_HOME (`make demo` makes one). For each mode a `cloudtune serve` process is started on
a free loopback port (unbatched: ``search_api.max_batch`` 1; batched: configs/pipeline.yaml as it is), and an async httpx
client posts --requests WAV clips of --clip-s seconds, cut at random offsets from the catalog's source files, at each
concurrency in turn. Prints one row per mode and concurrency: requests, errors, requests/s, latency percentiles, mean batch
size (from the service's /metrics) and the server's resident memory after the row (VmRSS, to see it stay flat).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


def clips(count: int, seconds: float, seed: int = 0) -> list[bytes]:
    """``count`` WAV clips of ``seconds`` from the catalog's source files (random tracks and offsets)."""
    from sqlalchemy import select

    from pipeline.audio import io as audio_io
    from pipeline.store import db
    from pipeline.store.tables import tracks

    with db.connect() as conn:
        uris = [u for (u,) in conn.execute(select(tracks.c.source_uri)).all()]
    files = [p for p in map(audio_io.uri_to_path, uris) if p is not None and p.exists()]
    if not files:
        raise SystemExit("bench: no catalog source files on this machine to cut clips from (run `make demo`)")
    rng, out = np.random.default_rng(seed), []
    for i in range(count):
        wave, sr = audio_io.load(files[i % len(files)])
        n = int(seconds * sr)
        start = int(rng.integers(0, max(1, len(wave) - n)))
        buf = io.BytesIO()
        sf.write(buf, wave[start: start + n], sr, format="WAV", subtype="PCM_16")
        out.append(buf.getvalue())
    return out


def start_server(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "serve", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    import httpx

    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        if proc.poll() is not None:
            raise SystemExit(f"bench: cloudtune serve exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("bench: cloudtune serve was not ready within 120 s")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def batch_stats(url: str) -> tuple[float, float]:
    """(sum, count) of the service's batch-size histogram."""
    import httpx

    got = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        for name in ("cloudtune_api_batch_size_sum", "cloudtune_api_batch_size_count"):
            if line.startswith(name + " "):
                got[name] = float(line.split()[1])
    return got.get("cloudtune_api_batch_size_sum", 0.0), got.get("cloudtune_api_batch_size_count", 0.0)


async def load(url: str, bodies: list[bytes], requests: int, concurrency: int) -> tuple[list[float], int, float]:
    """(latencies in s of the answered requests, errors, wall seconds) of ``requests`` posts, ``concurrency`` at a time."""
    import httpx

    latencies, errors, next_i = [], 0, 0

    async def worker(client):
        nonlocal errors, next_i
        while next_i < requests:
            i, next_i = next_i, next_i + 1
            t = time.perf_counter()
            try:
                r = await client.post(f"{url}/v1/search", content=bodies[i % len(bodies)], headers={"Content-Type": "audio/wav"})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - t)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000, help="requests per mode and concurrency")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--clip-s", type=float, default=5.0)
    ap.add_argument("--clips", type=int, default=64, help="distinct clips cycled through")
    ap.add_argument("--modes", nargs="+", choices=("batched", "unbatched"), default=["batched", "unbatched"])
    args = ap.parse_args()

    bodies = clips(args.clips, args.clip_s)
    base = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDTUNE__SEARCH_API__")} | {"PYTHONPATH": str(ROOT)}
    print(f"bench: {args.requests} requests of {args.clip_s:g} s WAV clips per row, loopback, {os.cpu_count()} CPUs")
    print(f"{'mode':10s} {'conc':>4s} {'ok':>6s} {'errors':>6s} {'req/s':>8s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'batch':>6s} {'rss MiB':>8s}")
    for mode in args.modes:
        env = base | ({"CLOUDTUNE__SEARCH_API__MAX_BATCH": "1"} if mode == "unbatched" else {})
        proc, url = start_server(env)
        try:
            asyncio.run(load(url, bodies, min(20, args.requests), 1))  # warm up: first-call costs out of the figures
            for conc in args.concurrency:
                before = batch_stats(url)
                lat, errors, wall = asyncio.run(load(url, bodies, args.requests, conc))
                after = batch_stats(url)
                p50, p95, p99 = (np.percentile(lat, q) * 1000 if lat else float("nan") for q in (50, 95, 99))
                mean_batch = (after[0] - before[0]) / max(1.0, after[1] - before[1])
                print(f"{mode:10s} {conc:4d} {len(lat):6d} {errors:6d} {len(lat) / wall:8.1f} {p50:8.1f} {p95:8.1f} {p99:8.1f} {mean_batch:6.2f} "
                      f"{rss_mib(proc.pid):8.0f}", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
