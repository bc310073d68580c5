"""Where a Qwen3-ASR transcription's peak memory comes from: RSS phase by phase in one process, on the full-size random models
of ``bench/asr_speed.py`` (made there once, under ``var/bench/qwen3-asr-random/<size>/``).

    .venv/bin/python bench/asr_memory.py [--size 0.6B] [--dtype bfloat16] [--seconds 10] [--tokens-per-second 4] [--first-token-only]

The phases, in one fresh process (started with a small RSS: run it from a shell, not from a process that held gigabytes, see
``bench/asr_speed.py`` on ru_maxrss): imports (torch, transformers, ``pipeline.asr.qwen3``), the load (``load_qwen3_asr``:
processor and model), the inputs (the processor: prompt and log-mel features of a random clip), the first token (encoder,
prefill and one decode step: ``generate`` with a budget of 1), then a whole generation (``--tokens-per-second`` x
``--seconds`` new tokens; with ``--first-token-only``, for long clips, the first token again instead). Before each phase the peak-RSS mark is
reset (``/proc/self/clear_refs``); after it, the phase's time, RSS before, its peak (``VmHWM``), the split of its highest
sampled RSS (every 3 ms) into anonymous memory and file pages (``RssAnon``, ``RssFile``: the memory-mapped checkpoint, which
bfloat16 uses in place, shows here, as do the shared libraries), and RSS after. Tensors are not seen by tracemalloc, hence
RSS.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MIB = 2**20


def status() -> dict[str, int]:
    keys = ("VmRSS", "VmHWM", "RssAnon", "RssFile")
    return {line.split(":")[0]: int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
            if line.startswith(keys)}


def phase(name: str, fn):
    """Run ``fn`` with the peak mark reset and RSS sampled; print one line; return what ``fn`` returns."""
    Path("/proc/self/clear_refs").write_text("5")
    before, top, done = status(), {"VmRSS": 0}, threading.Event()

    def sample() -> None:
        nonlocal top
        while not done.is_set():
            now = status()
            top = now if now["VmRSS"] > top["VmRSS"] else top
            time.sleep(0.003)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - t0
    done.set()
    sampler.join()
    after = status()
    print(f"{name:>12} {elapsed:7.2f} {before['VmRSS'] / MIB:10.0f} {after['VmHWM'] / MIB:9.0f} {top.get('RssAnon', 0) / MIB:9.0f} "
          f"{top.get('RssFile', 0) / MIB:9.0f} {after['VmRSS'] / MIB:9.0f}", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="0.6B")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--quantize", default="none", choices=("none", "int8"), help="int8: qwen3_asr.quantize int8 (with --dtype bfloat16)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--tokens-per-second", type=float, default=4.0)
    ap.add_argument("--first-token-only", action="store_true", help="skip the whole generation (long clips)")
    args = ap.parse_args()
    from asr_speed import git_commit, model_dir

    folder = str(model_dir(args.size))  # imports torch and transformers only when the model must be made
    print(f"# qwen3-asr memory by phase, {args.size} {args.dtype}, commit {git_commit()}, load average {os.getloadavg()[0]:.2f}, "
          f"{args.seconds:g} s clip, {args.tokens_per_second:g} new tokens/s; MiB")
    print(f"{'phase':>12} {'s':>7} {'RSS before':>10} {'peak':>9} {'peak anon':>9} {'peak file':>9} {'RSS after':>9}")

    def imports() -> None:
        import torch  # noqa: F401
        import transformers  # noqa: F401

        import pipeline.asr.qwen3  # noqa: F401

    phase("imports", imports)
    import numpy as np

    from pipeline.asr.qwen3 import load_qwen3_asr
    from pipeline.config.asr_settings import Qwen3AsrSettings

    settings = Qwen3AsrSettings(model=folder, device="cpu", dtype=args.dtype, quantize=args.quantize,
                                tokens_per_second=args.tokens_per_second, min_new_tokens=0,
                                repetition_guard=0, max_new_tokens=None)
    tr = phase("load", lambda: load_qwen3_asr(folder, settings))
    wave = (0.1 * np.random.default_rng(0).standard_normal(int(args.seconds * 16000))).astype(np.float32)
    inputs = phase("inputs", lambda: tr.inputs([wave], "English"))
    phase("first token", lambda: tr._generate(inputs, [1]))
    if args.first_token_only:  # again, with the weights' pages already in (the first time, they come in as the layers run)
        phase("again", lambda: tr._generate(inputs, [1]))
    else:
        phase("generate", lambda: tr._generate(inputs, [tr.budget(args.seconds)]))
    weights = sum(p.numel() * p.element_size() for p in tr.model.parameters())
    print(f"# weights {weights / MIB:.0f} MiB ({str(tr.model.dtype).removeprefix('torch.')}); prompt {inputs['input_ids'].shape[1]} tokens, "
          f"{inputs['input_features'].shape[2]} mel frames")


if __name__ == "__main__":
    main()
