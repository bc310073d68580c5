"""The fingerprint embedder on the CPU: the traced torch model (``fingerprint_inference.backend: torch``) against ONNX Runtime
over `cloudtune export onnx`'s export (``backend: onnx``) at 1 and 2 intra-op threads, in float32 and int8, interleaved.

    .venv/bin/python bench/onnx_speed.py [--rounds 10] [--catalog-s 30] [--queries 10] [--with-front]

A randomly initialised model of the real configs/fingerprint.yaml size (the compute of a trained one), saved as training saves
it and exported by the same code as the command; each backend is a ``FingerprintEmbedder`` as search and serve build it. Waves
are given at the model's 8 kHz, so no resampling (the same for every backend) is timed. Per round, in a rotating order, each
backend embeds a ``--catalog-s`` track (1 s segments every 0.5 s, ``segments.batch_size`` per forward pass: segments per
second) and ``--queries`` single 5 s queries (9 segments in one pass: latency). The backends: ``torch`` (torch's default
threads), ``torch-1`` (one torch thread), ``onnx-1`` and ``onnx-2`` (ONNX Runtime's intra-op threads; the log-mel front end in
NumPy, as served), ``onnx-1-torchfront`` (the same with the front end in torch, as served before 2026-12-02), ``int8-1`` and
``int8-2`` (the export quantized as ``precision: int8`` quantizes it, calibrated on 512 segments of another synthetic track,
half under noise); ``--with-front`` adds the whole model, front end included (ONNX's STFT), in ONNX Runtime at 1 thread.

``OMP_WAIT_POLICY`` is set PASSIVE unless the environment sets it, as `cloudtune serve` does: on a machine that other jobs
keep busy, torch's spin-waiting OpenMP threads made the 2-thread rows many times slower and erratic (``OMP_WAIT_POLICY=ACTIVE``
shows it; bench/RESULTS.md).

Prints per backend segments/s (median over rounds) and query p50/p95, the ratios to torch, the largest |difference| of the
vectors from torch's, the commit and the load average before and after: other jobs on a 2-core machine move these figures.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def git_commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return head + ("+dirty" if dirty else "")


def music(seconds: float, sr: int, seed: int) -> np.ndarray:
    """Notes with harmonics over a little noise: catalog-like input (the compute does not depend on it)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wave = np.zeros_like(t)
    for start in np.arange(0, seconds, 0.25):
        f, on = rng.uniform(110, 880), (t >= start) & (t < start + 0.5)
        wave[on] += sum(np.sin(2 * np.pi * f * k * t[on]) / k for k in (1, 2, 3))
    return (0.1 * wave + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def spans(n: int, seg: int) -> list[tuple[int, int]]:
    return [(a, a + seg) for a in range(0, n - seg + 1, seg // 2)]


class TorchFront:
    """The model's torch front end behind the NumPy front end's call (what ONNX inference used before)."""

    def __init__(self, front):
        self.front = front

    def numpy(self, waves: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.front(torch.from_numpy(waves)).numpy()


class FullGraph:
    """The whole model (front end included) exported to ONNX and run in ONNX Runtime, wrapped like an embedder's ``net``."""

    def __init__(self, model, path: Path):
        import torch

        from pipeline.embed.fingerprint_onnx import ort_session

        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (torch.randn(2, model.segment_samples),), input_names=["waves"], output_names=["vectors"],
                                        opset_version=18, dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), verbose=False)
        program.save(path, external_data=False)
        self.session = ort_session(path, threads=1)

    def __call__(self, waves):
        import torch

        return torch.from_numpy(self.session.run(["vectors"], {"waves": waves.numpy()})[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--catalog-s", type=float, default=30.0, help="seconds of catalog audio embedded per backend per round")
    ap.add_argument("--queries", type=int, default=10, help="single 5 s queries per backend per round")
    ap.add_argument("--with-front", action="store_true", help="also the whole model (ONNX's STFT) in ONNX Runtime")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads, as `cloudtune serve` sets it

    import torch

    from pipeline import config
    from pipeline.data.fingerprint import calibration_segments
    from pipeline.embed.fingerprint import FingerprintEmbedder
    from pipeline.embed.fingerprint_onnx import export_checkpoint, quantize_int8
    from pipeline.models.fingerprint import FingerprintNet, save_fingerprint

    load_before = os.getloadavg()
    s, inference = config.load_fingerprint().fingerprint, config.load_fingerprint().fingerprint_inference
    batch = config.load_index().segments.batch_size
    tmp = Path(tempfile.mkdtemp(prefix="onnx_speed_"))
    torch.manual_seed(0)
    model = FingerprintNet(s).eval()
    ckpt = tmp / "run" / "models" / "fingerprint.pt"
    ckpt.parent.mkdir(parents=True)
    save_fingerprint(ckpt, model, epoch=0)
    exported = export_checkpoint(ckpt, tmp / "fingerprint.onnx", inference.opset, inference.tolerance)
    params = sum(p.numel() for p in model.parameters())
    sr, seg = s.sample_rate, round(s.segment_s * s.sample_rate)
    default_threads = torch.get_num_threads()
    backends = {"torch": FingerprintEmbedder(ckpt, "cpu", batch, sr), "torch-1": FingerprintEmbedder(ckpt, "cpu", batch, sr)}
    torch_threads = {"torch-1": 1}  # the others run torch (the front end) at its default
    for threads in (1, 2):
        backends[f"onnx-{threads}"] = FingerprintEmbedder(ckpt, "cpu", batch, sr, onnx=tmp / "fingerprint.onnx", threads=threads)
        assert backends[f"onnx-{threads}"].backend == "onnx"
    backends["onnx-1-torchfront"] = FingerprintEmbedder(ckpt, "cpu", batch, sr, onnx=tmp / "fingerprint.onnx", threads=1)
    backends["onnx-1-torchfront"].net.front = TorchFront(model.front)
    int8 = quantize_int8(tmp / "fingerprint.onnx", tmp / "fingerprint.int8.onnx", model.front.numpy(calibration_segments([music(120.0, sr, 3)], 512, seg, 0)),
                         model.front.numpy(calibration_segments([music(120.0, sr, 4)], 512, seg, 1)), 0.0)
    for threads in (1, 2):
        backends[f"int8-{threads}"] = FingerprintEmbedder(ckpt, "cpu", batch, sr, int8=tmp / "fingerprint.int8.onnx", threads=threads)
        assert backends[f"int8-{threads}"].precision == "int8"
    if args.with_front:
        full = FingerprintEmbedder(ckpt, "cpu", batch, sr)
        full.net, full.backend = FullGraph(model, tmp / "full.onnx"), "onnx-full-1"
        backends["onnx-full-1"] = full

    track, query = music(args.catalog_s, sr, 1), music(5.0, sr, 2)
    track_spans, query_spans = spans(len(track), seg), spans(len(query), seg)
    assert len(query_spans) == 9
    want = backends["torch"].embed_spans([track], [track_spans])
    diff = {name: float(np.abs(b.embed_spans([track], [track_spans]) - want).max()) for name, b in backends.items()}
    for b in backends.values():  # warm-up: first calls allocate
        b.embed_spans([query], [query_spans])

    rate: dict[str, list[float]] = {n: [] for n in backends}
    lat: dict[str, list[float]] = {n: [] for n in backends}
    names = list(backends)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:  # a rotating order: no backend always runs first
            b = backends[name]
            torch.set_num_threads(torch_threads.get(name, default_threads))
            t0 = time.perf_counter()
            b.embed_spans([track], [track_spans])
            rate[name].append(len(track_spans) / (time.perf_counter() - t0))
            for _ in range(args.queries):
                t0 = time.perf_counter()
                b.embed_spans([query], [query_spans])
                lat[name].append((time.perf_counter() - t0) * 1e3)

    load_after = os.getloadavg()
    print(f"# fingerprint inference, commit {git_commit()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({default_threads} threads by default), "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, load average before/after {load_before[0]:.2f}/{load_after[0]:.2f}")
    print(f"# model: configs/fingerprint.yaml ({params / 1e6:.2f} M parameters, random weights), export opset {exported['opset']} "
          f"(check max |diff| {exported['max_abs_diff']:.2g}; int8: cosine to float32 mean {int8['mean_cosine']:.4f}, "
          f"min {int8['min_cosine']:.4f}); catalog {args.catalog_s:g} s = {len(track_spans)} segments in passes of {batch}; "
          f"query 5 s = 9 segments; {args.rounds} rounds x {args.queries} queries, interleaved")
    base_rate, base_p50 = np.median(rate["torch"]), np.percentile(lat["torch"], 50)
    print(f"{'backend':<12} {'segments/s':>11} {'x torch':>8} {'query p50 ms':>13} {'p95 ms':>8} {'x torch':>8} {'max|diff|':>10}")
    for name in names:
        med, p50, p95 = np.median(rate[name]), np.percentile(lat[name], 50), np.percentile(lat[name], 95)
        print(f"{name:<12} {med:>11.0f} {med / base_rate:>8.2f} {p50:>13.2f} {p95:>8.2f} {base_p50 / p50:>8.2f} {diff[name]:>10.2g}")


if __name__ == "__main__":
    main()
