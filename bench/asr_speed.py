"""Qwen3-ASR speed on the CPU: full-size 0.6B / 1.7B architectures with random weights (the same compute as the real models).

    .venv/bin/python bench/asr_speed.py [--sizes 0.6B,1.7B] [--dtypes float32,bfloat16,int8] [--seconds 10] [--tokens-per-second 4]

``int8`` in ``--dtypes``: ``qwen3_asr.quantize: int8`` (int8 weights of every linear layer, bfloat16 activations).

For each size, a random model in the real layout is saved once (bfloat16, as the release ships) under
``var/bench/qwen3-asr-random/<size>/`` and reused. Each (size, dtype) then runs in a fresh Python process, started by this one,
through the real path (``load_qwen3_asr``, then ``transcribe``) on a clip of ``--seconds`` with exactly
``--tokens-per-second`` new tokens per second of audio (random weights never end a transcript, and the repetition guard is
off, so the budget is spent to the token; 4/s is about what English speech needs). Reported per run:

- cold start: from this process starting the child to the child's first generated token (Python start, imports, model load,
  features, encoder, prefill, one decode step);
- RTF: a second, warm transcribe() of the clip, seconds of compute per second of audio;
- peak RSS of the child: its ``VmHWM`` (``/proc/self/status``), and how much of its RSS at the end is file pages (``RssFile``:
  in bfloat16, the memory-mapped checkpoint, used in place). Not ``resource.getrusage``'s ru_maxrss: Linux carries it over
  from the parent through fork and exec (Python starts the child with vfork, so the child inherits this process's peak, the
  random model's creation included: before 2026-11-30 this column showed 3.87 GiB for 0.6B and 9.13 GiB for 1.7B in both
  dtypes, which were this process's peaks, not the child's).

The sizes, assumed from public descriptions of the released checkpoints (not read from them):

- 0.6B: AuT encoder d_model 896, 18 layers, 14 heads, FFN 3584, projector to 1024; decoder = Qwen3-0.6B (hidden 1024, 28
  layers, 16 query / 8 key-value heads of 128, FFN 3072).
- 1.7B: encoder d_model 1024, 24 layers, 16 heads, FFN 4096, projector to 2048; decoder = Qwen3-1.7B (hidden 2048, 28 layers,
  16 / 8 heads of 128, FFN 6144).
- both: vocabulary 151936, tied embeddings, 128 mel bins, conv stack width 480, 1 s chunks, 8 s attention windows.

The tokenizer is the tests' tiny one (tests/qwen3_asr_tiny.py): the token ids the random model picks mostly decode to
nothing, which changes no compute. Prints the git commit and the load average: other jobs on a shared machine move these
figures a lot.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENCODER = dict(num_mel_bins=128, downsample_hidden_size=480, n_window=50, n_window_infer=800, max_position_embeddings=13)
TEXT = dict(num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
            max_position_embeddings=65536, tie_word_embeddings=True, rope_theta=1000000.0)
SIZES = {
    "0.6B": (dict(d_model=896, encoder_layers=18, encoder_attention_heads=14, encoder_ffn_dim=3584, output_dim=1024),
             dict(hidden_size=1024, intermediate_size=3072)),
    "1.7B": (dict(d_model=1024, encoder_layers=24, encoder_attention_heads=16, encoder_ffn_dim=4096, output_dim=2048),
             dict(hidden_size=2048, intermediate_size=6144)),
}


def model_dir(size: str) -> Path:
    """The random model of ``size`` in transformers' layout, made once (torch and transformers are imported only then)."""
    folder = ROOT / "var" / "bench" / "qwen3-asr-random" / size
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import Qwen3ASRConfig, Qwen3ASRFeatureExtractor, Qwen3ASRForConditionalGeneration, Qwen3ASRProcessor

    sys.path.insert(0, str(ROOT / "tests"))
    from qwen3_asr_tiny import tiny_tokenizer

    from pipeline.asr.qwen3_convert import CHAT_TEMPLATE

    audio, text = SIZES[size]
    tok = tiny_tokenizer()
    ids = tok.convert_tokens_to_ids
    config = Qwen3ASRConfig(audio_config={**ENCODER, **audio}, text_config={**TEXT, **text}, audio_token_id=ids("<|audio_pad|>"),
                            pad_token_id=ids("<|endoftext|>"), eos_token_id=[ids("<|endoftext|>"), ids("<|im_end|>")])
    torch.manual_seed(0)
    model = Qwen3ASRForConditionalGeneration(config).to(torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    print(f"# {size}: {n / 1e9:.2f} B parameters, saving to {folder}", flush=True)
    tmp = folder.with_name(f".{size}.tmp")
    model.save_pretrained(tmp)
    Qwen3ASRProcessor(feature_extractor=Qwen3ASRFeatureExtractor(), tokenizer=tok, chat_template=CHAT_TEMPLATE).save_pretrained(tmp)
    os.replace(tmp, folder)
    return folder


def child(folder: str, dtype: str, seconds: float, tokens_per_second: float, started: float) -> None:
    """One run in this fresh process: load, a cold transcribe timed to its first token, a warm one; a JSON line on stdout."""
    import numpy as np

    from pipeline.asr.qwen3 import load_qwen3_asr
    from pipeline.config.asr_settings import Qwen3AsrSettings

    quantize = "int8" if dtype == "int8" else "none"  # "int8": qwen3_asr.quantize int8, bfloat16 activations
    settings = Qwen3AsrSettings(model=folder, device="cpu", dtype="bfloat16" if quantize == "int8" else dtype, quantize=quantize,
                                tokens_per_second=tokens_per_second, min_new_tokens=0,
                                repetition_guard=0, max_new_tokens=None)
    t_load = time.time()
    tr = load_qwen3_asr(folder, settings)
    loaded = time.time()
    first: list[float] = []

    class FirstToken:  # generate() streamer: the prompt comes first, then one call per new token
        calls = 0

        def put(self, value):
            self.calls += 1
            if self.calls == 2 and not first:
                first.append(time.time())

        def end(self):
            pass

    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
    budget = tr.budget(seconds)
    tr._generate(tr.inputs([wave], "English"), [budget], streamer=FirstToken())
    t0 = time.perf_counter()
    result = tr.transcribe([wave], language="English")[0]
    warm = time.perf_counter() - t0
    print(json.dumps({"cold_start_s": first[0] - started, "load_s": loaded - t_load, "rtf": warm / seconds, "warm_s": warm,
                      "new_tokens": tr.last_new_tokens[0], "budget": budget, "text_chars": len(result.text),
                      "peak_rss_gib": _status_kib("VmHWM") / 2**20, "file_rss_gib": _status_kib("RssFile") / 2**20}))


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def git_commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return head + ("+dirty" if dirty else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="0.6B,1.7B")
    ap.add_argument("--dtypes", default="float32,bfloat16,int8")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--tokens-per-second", type=float, default=4.0)
    ap.add_argument("--child", nargs=5, metavar=("DIR", "DTYPE", "SECONDS", "TPS", "STARTED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        folder, dtype, seconds, tps, started = args.child
        child(folder, dtype, float(seconds), float(tps), float(started))
        return
    print(f"# qwen3-asr speed, commit {git_commit()}, load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs, "
          f"{args.seconds:g} s clip, {args.tokens_per_second:g} new tokens/s", flush=True)
    print(f"{'size':>5} {'dtype':>9} {'cold start s':>12} {'load s':>7} {'RTF':>6} {'new tokens':>10} {'peak RSS GiB':>12} {'file pages GiB':>14}")
    for size in args.sizes.split(","):
        folder = model_dir(size)
        for dtype in args.dtypes.split(","):
            started = time.time()
            p = subprocess.run([sys.executable, __file__, "--child", str(folder), dtype, str(args.seconds), str(args.tokens_per_second),
                                repr(started)], capture_output=True, text=True, cwd=ROOT)
            if p.returncode != 0:
                print(f"{size:>5} {dtype:>9} failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}")
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            print(f"{size:>5} {dtype:>9} {r['cold_start_s']:12.1f} {r['load_s']:7.1f} {r['rtf']:6.2f} {r['new_tokens']:>4}/{r['budget']:<5} "
                  f"{r['peak_rss_gib']:12.2f} {r['file_rss_gib']:14.2f}", flush=True)


if __name__ == "__main__":
    main()
