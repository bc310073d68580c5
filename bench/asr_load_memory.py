"""Peak memory of loading a Qwen3-ASR checkpoint on the CPU, over the size of the weights it loads: a small random model of the
real classes (about 130M parameters), so it runs in seconds instead of needing the full-size models' 4+ GB.

    .venv/bin/python bench/asr_load_memory.py [--dtype float32] [--runs 2]

The model is saved once in bfloat16 safetensors (as the release ships) under ``var/bench/qwen3-asr-random/load-memory/``.
Each run is a fresh Python process: imports, then the peak-RSS mark reset (``/proc/self/clear_refs``), then the load, then
VmHWM read; the figure is (peak RSS during the load - RSS before it) / bytes of the loaded parameters in ``--dtype``. Two
loaders are compared:

- ``mmap``: transformers' own ``from_pretrained(folder)``: it memory-maps the safetensors files and copies each tensor out
  (cast to the dtype), and the mapped pages it touched count in the process's RSS until the files are closed at the end, so
  the peak is the loaded weights plus the whole checkpoint file;
- ``ours``: :func:`pipeline.asr.qwen3.load_qwen3_asr`'s ``_load_model``: when the weights must be cast, the same
  ``from_pretrained`` given a state dict of lazy tensors, each read with ``pread`` at the offset the file's header gives and
  cast in blocks of rows straight into its final tensor (the file's pages stay in the OS page cache, outside the process);
  when they need no cast, transformers' own zero-copy memory map (``--dtype bfloat16`` shows it).

Also printed: the peak's split into anonymous memory and mapped file pages (sampled every 5 ms during the load).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

AUDIO = dict(num_mel_bins=128, downsample_hidden_size=480, n_window=50, n_window_infer=800, max_position_embeddings=13, d_model=512,
             encoder_layers=8, encoder_attention_heads=8, encoder_ffn_dim=2048, output_dim=512)
TEXT = dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4, head_dim=64,
            vocab_size=151936, max_position_embeddings=65536, tie_word_embeddings=True, rope_theta=1000000.0)


def model_dir() -> Path:
    import torch
    from transformers import Qwen3ASRConfig, Qwen3ASRFeatureExtractor, Qwen3ASRForConditionalGeneration, Qwen3ASRProcessor

    sys.path.insert(0, str(ROOT / "tests"))
    from qwen3_asr_tiny import tiny_tokenizer

    from pipeline.asr.qwen3_convert import CHAT_TEMPLATE

    folder = ROOT / "var" / "bench" / "qwen3-asr-random" / "load-memory"
    if (folder / "config.json").is_file():
        return folder
    tok = tiny_tokenizer()
    ids = tok.convert_tokens_to_ids
    config = Qwen3ASRConfig(audio_config=AUDIO, text_config=TEXT, audio_token_id=ids("<|audio_pad|>"), pad_token_id=ids("<|endoftext|>"),
                            eos_token_id=[ids("<|endoftext|>"), ids("<|im_end|>")])
    torch.manual_seed(0)
    model = Qwen3ASRForConditionalGeneration(config).to(torch.bfloat16)
    tmp = folder.with_name(".load-memory.tmp")
    model.save_pretrained(tmp)
    Qwen3ASRProcessor(feature_extractor=Qwen3ASRFeatureExtractor(), tokenizer=tok, chat_template=CHAT_TEMPLATE).save_pretrained(tmp)
    os.replace(tmp, folder)
    return folder


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def child(folder: str, dtype: str, loader: str) -> None:
    import torch
    from transformers import Qwen3ASRForConditionalGeneration

    from pipeline.asr import qwen3

    torch_dtype = getattr(torch, dtype)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (the peak RSS) to the current RSS
    before = _status("VmRSS")
    top = {"VmRSS": 0}
    done = threading.Event()

    def sample() -> None:
        nonlocal top
        while not done.is_set():
            now = {key: _status(key) for key in ("VmRSS", "RssAnon", "RssFile")}
            top = now if now["VmRSS"] > top["VmRSS"] else top
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    if loader == "mmap":
        net = Qwen3ASRForConditionalGeneration.from_pretrained(folder, dtype=torch_dtype)
    else:
        net = qwen3._load_model(Path(folder), torch_dtype)
    done.set()
    sampler.join()
    peak, after = _status("VmHWM"), _status("VmRSS")
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    print(json.dumps({"params": sum(p.numel() for p in net.parameters()), "weights": weights, "before": before, "peak": peak, "after": after,
                      "peak_anon": top.get("RssAnon", 0), "peak_file": top.get("RssFile", 0),
                      "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "dtype": str(net.dtype)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    from asr_speed import git_commit

    folder = model_dir()
    file_mb = sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 2**20
    print(f"# qwen3-asr load memory, commit {git_commit()}, load average {os.getloadavg()[0]:.2f}; checkpoint {file_mb:.0f} MiB "
          f"(bfloat16 safetensors), loaded as {args.dtype}")
    for loader in ("mmap", "ours"):
        for _ in range(args.runs):
            p = subprocess.run([sys.executable, __file__, "--child", str(folder), args.dtype, loader], capture_output=True, text=True, cwd=ROOT)
            if p.returncode:
                print(f"{loader}: failed: {p.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            mib = 2**20
            print(f"{loader:>5}: {r['params'] / 1e6:.0f}M parameters, {r['weights'] / mib:.0f} MiB of weights; RSS {r['before'] / mib:.0f} MiB "
                  f"before the load, peak {r['peak'] / mib:.0f} (anonymous {r['peak_anon'] / mib:.0f} + file pages {r['peak_file'] / mib:.0f}), "
                  f"after {r['after'] / mib:.0f}: peak over the weights {(r['peak'] - r['before']) / r['weights']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
