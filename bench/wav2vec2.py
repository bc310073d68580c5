"""wav2vec2 features on a wav2vec2-base-sized model (random weights, the same compute as the real one).

    .venv/bin/python bench/wav2vec2.py [--clips 16] [--seconds 5] [--threads 1,2] [--dtypes float32,bfloat16] [--script-clips 4]
        [--service-calls 10] [--service-dtypes auto,float32] [--service-threads N] [--device cpu|cuda]

1. The original script two ways: as its contract is used, one process per clip (``--script-clips`` of them: python
   start, imports, model load, one clip), and as a loop in one process with the model loaded once, its kindest
   reading (feature extractor, ``torch.no_grad``, mean of last_hidden_state). Then the batched ``wav2vec2``
   embedder (length bucketing, ``inference_mode``) on the same 24 kHz catalog clips, side by side in one run:
   clips/s, the ratio to the loop as written (torch's default threads), to the loop's best thread count and to
   the script per clip, and the largest 1 - cosine between their vectors. The loop runs once per thread count;
   the embedder per thread count and dtype.
2. A clip of ``--seconds`` through the model service (worker process, JSON lines), after a warm-up: p50/p95, and
   the worker's peak RSS (VmHWM), once per service dtype.

Prints the machine's load average too: other jobs on a 2-core machine move these figures a lot.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_clips(n: int, seconds: float, sr: int = 24000) -> list[np.ndarray]:
    """Catalog-like segments: a few harmonic notes over noise, each clip different."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    clips = []
    for _ in range(n):
        wave = sum(rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * f * t) for f in rng.uniform(80, 2000, size=4))
        clips.append((wave + 0.02 * rng.standard_normal(t.size)).astype(np.float32))
    return clips


def original_loop(model_dir: str, clips16k: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """The original script's body, once per clip."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    fe = Wav2Vec2FeatureExtractor.from_pretrained(model_dir)
    model = Wav2Vec2Model.from_pretrained(model_dir).eval()
    with torch.no_grad():
        model(**fe(clips16k[0], sampling_rate=16000, return_tensors="pt"))  # warm-up, as the embedder gets
    t0 = time.perf_counter()
    out = []
    for wave in clips16k:
        inputs = fe(wave, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            out.append(model(**inputs).last_hidden_state.mean(dim=1)[0].numpy())
    return np.stack(out), time.perf_counter() - t0


ORIGINAL_SCRIPT = """
import json, sys
import torch
from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

audio = json.load(sys.stdin)["audio"]
fe = Wav2Vec2FeatureExtractor.from_pretrained(sys.argv[1])
model = Wav2Vec2Model.from_pretrained(sys.argv[1])
inputs = fe(audio["array"], sampling_rate=audio["sampling_rate"], return_tensors="pt")
with torch.no_grad():
    print(json.dumps({"embedding": model(**inputs).last_hidden_state.mean(dim=1)[0].tolist()}))
"""


def original_script_per_clip(model_dir: str, clips16k: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """The original script as its contract is used: one process per clip (JSON on stdin, python start, imports,
    model load, one forward pass, JSON on stdout)."""
    import json
    import subprocess

    t0 = time.perf_counter()
    out = []
    for wave in clips16k:
        request = json.dumps({"audio": {"array": wave.tolist(), "sampling_rate": 16000}})
        done = subprocess.run([sys.executable, "-c", ORIGINAL_SCRIPT, model_dir], input=request, capture_output=True, text=True, check=True)
        out.append(json.loads(done.stdout)["embedding"])
    return np.asarray(out, dtype=np.float32), time.perf_counter() - t0


def cosine_gap(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(1 - (a * b).sum(1).min())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", default="1,2", help="torch thread counts to try, for the original loop and the batched embedder")
    ap.add_argument("--dtypes", default="float32,bfloat16", help="dtypes to try for the batched embedder")
    ap.add_argument("--batch-sizes", help="batch sizes to try for the embedder (default: config wav2vec2.batch_size)")
    ap.add_argument("--script-clips", type=int, default=4, help="clips through the original script run once per clip (0: skip)")
    ap.add_argument("--skip-service", action="store_true")
    ap.add_argument("--service-calls", type=int, default=10)
    ap.add_argument("--service-dtypes", default="auto,float32", help="wav2vec2.dtype for the service, one service run each")
    ap.add_argument("--service-threads", type=int, default=None, help="wav2vec2.threads for the service (default: the config's)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import soxr
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from pipeline import config
    from pipeline.embed.wav2vec2 import Wav2Vec2Embedder
    from pipeline.models.wav2vec2 import Wav2Vec2Features
    from pipeline.service import handlers
    from pipeline.service.model_service import ModelService
    from pipeline.service.worker import proc_memory_mb

    settings = config.section(config.Wav2Vec2Settings, config.load(), "wav2vec2")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else [None]  # None: the config's batching
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, default threads {torch.get_num_threads()}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(Path(tmp) / "wav2vec2-base-random")
        torch.manual_seed(0)
        Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(model_dir)  # Wav2Vec2Config() defaults = wav2vec2-base: 12 layers, 768 wide, 95M params
        Wav2Vec2FeatureExtractor().save_pretrained(model_dir)  # as wav2vec2-base's: normalize, no attention mask
        clips = make_clips(args.clips, args.seconds)
        clips16k = [soxr.resample(c, 24000, 16000, quality=settings.resample_quality).astype(np.float32) for c in clips]
        print(f"model: random wav2vec2-base ({sum(p.numel() for p in Wav2Vec2Model(Wav2Vec2Config()).parameters()) / 1e6:.1f}M params); "
              f"{args.clips} clips x {args.seconds:g} s at 24 kHz")

        thread_counts = [int(t) for t in args.threads.split(",")]
        loop_rates, ref = {}, None
        print()
        for threads in sorted(set(thread_counts) | {os.cpu_count() or 1}, reverse=True):
            torch.set_num_threads(threads)
            vectors, loop_s = original_loop(model_dir, clips16k)
            ref = vectors if ref is None else ref
            loop_rates[threads] = args.clips / loop_s
            default = " (torch's default: the script as written)" if threads == (os.cpu_count() or 1) else ""
            print(f"original loop (1 clip at a time, no_grad, fp32), {threads} thread{'s' if threads > 1 else ''}{default}: "
                  f"{loop_rates[threads]:.2f} clips/s ({loop_s / args.clips * 1e3:.0f} ms/clip)")
        loop_rate = loop_rates[os.cpu_count() or 1]
        best_loop = max(loop_rates.values())
        script_rate = None
        if args.script_clips:
            torch.set_num_threads(os.cpu_count() or 1)
            vectors, script_s = original_script_per_clip(model_dir, clips16k[: args.script_clips])
            script_rate = args.script_clips / script_s
            print(f"original script once per clip (a fresh process each: imports, model load, 1 clip; {args.script_clips} clips): "
                  f"{script_rate:.2f} clips/s ({script_s / args.script_clips * 1e3:.0f} ms/clip); max 1-cos to the loop "
                  f"{cosine_gap(vectors, ref[: args.script_clips]):.1e}")
        print(f"{'batched embedder':28s} {'clips/s':>8s} {'ms/clip':>8s} {'x loop':>7s} {'x best loop':>11s} {'max 1-cos':>10s}"
              + (f" {'x script':>9s}" if script_rate else ""))
        for dtype in args.dtypes.split(","):
            for threads in thread_counts:
                for batch_size in batch_sizes:
                    if batch_size is None:
                        features = Wav2Vec2Features(model_dir, device=args.device, dtype=dtype, threads=threads, batch_size=settings.batch_size,
                                                    max_batch_seconds=settings.max_batch_seconds, cpu_max_batch_seconds=settings.cpu_max_batch_seconds)
                    else:
                        features = Wav2Vec2Features(model_dir, device=args.device, dtype=dtype, threads=threads, batch_size=batch_size,
                                                    max_batch_seconds=batch_size * args.seconds)
                    embedder = Wav2Vec2Embedder(features, sample_rate=24000)
                    batch_size = len(features.batches([len(c) * 2 // 3 for c in clips])[0])
                    embedder.embed(clips[:batch_size])  # warm-up
                    t0 = time.perf_counter()
                    vectors = embedder.embed(clips)
                    took = time.perf_counter() - t0
                    rate = args.clips / took
                    label = f"{dtype}, {threads} thread{'s' if threads > 1 else ''}, batch {batch_size}"
                    print(f"{label:28s} {rate:8.2f} {took / args.clips * 1e3:8.0f} {rate / loop_rate:7.2f} {rate / best_loop:11.2f} "
                          f"{cosine_gap(vectors, ref):10.2e}" + (f" {rate / script_rate:9.1f}" if script_rate else ""))
                    del features, embedder
                    gc.collect()

        for service_dtype in [] if args.skip_service else args.service_dtypes.split(","):
            env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
            w2v = {**config.load()["wav2vec2"], "dtype": service_dtype}
            if args.service_threads is not None:
                w2v["threads"] = args.service_threads
            service_settings = config.section(config.ServiceSettings, config.load(), "service")
            service = ModelService(handlers.WAV2VEC2, {"settings": w2v, "model": model_dir, "device": args.device}, service_settings, isolated=True,
                                   env=env)
            t0 = time.perf_counter()
            service.initialize(preload=True)
            ready_s = time.perf_counter() - t0
            clip = clips[0]
            for _ in range(2):
                service.process(clip, 24000)
            service.latencies.clear()
            for _ in range(args.service_calls):
                service.process(clip, 24000)
            caps = service.capabilities()
            lat = np.asarray(service.latencies) * 1e3
            print(f"\nservice (worker process, {caps.get('device')}, {service_dtype}, threads {w2v['threads']}): "
                  f"started + model loaded in {ready_s:.1f} s; {args.seconds:g} s clip at 24 kHz over {args.service_calls} calls: "
                  f"p50 {np.percentile(lat, 50):.0f} ms, p95 {np.percentile(lat, 95):.0f} ms, success rate {caps['success_rate']:.2f}; "
                  f"worker peak RSS {caps['worker_peak_rss_mb']:.0f} MiB")
            service.dispose()
        print(f"peak RSS of this process (the loop's model + one embedder per row): {proc_memory_mb()['peak_rss_mb']:.0f} MiB")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
