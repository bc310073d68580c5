"""`cloudtune embed` on real recorded speech: the JSON contract end to end, one process per clip, as a user runs it.

    .venv/bin/python bench/wav2vec2_speech.py [--model DIR] [--isolated]

The speech is the spoken channel names that Debian's alsa-utils ships ("Front Left", "Rear Center", ...:
48 kHz 16-bit recordings of a human voice), fetched with `apt-get download` into var/bench/ (run
`apt-get update` first on a fresh machine). Each file goes in as `{"audio": {"array": [...], "sampling_rate": 48000}}`
on stdin. Checked per clip: exit code 0, stdout is exactly one JSON line `{"embedding": [...]}` with the model's hidden
size of finite numbers, and it equals the mean of last_hidden_state computed directly with transformers (float32).

--model: a local wav2vec2 directory, e.g. a copy of facebook/wav2vec2-base; the cosine similarities between the
clips are printed too (they mean something only with real weights). Without it, a random model of wav2vec2-base's
size (save_pretrained to a temp dir) runs: the contract and its parity hold, but the vectors carry no meaning.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def fetch_speech(bench_dir: Path) -> list[Path]:
    from ingest import fetch_debs  # bench/ingest.py (this folder is on sys.path)

    speech = bench_dir / "speech"
    if not list(speech.rglob("Front_Left.wav")):
        fetch_debs(bench_dir, ("alsa-utils",), speech)
    return sorted(p for p in speech.rglob("*.wav") if p.stem != "Noise")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench-dir", type=Path, default=ROOT / "var" / "bench")
    ap.add_argument("--model", help="local wav2vec2 directory (default: a random model of wav2vec2-base's size)")
    ap.add_argument("--isolated", action="store_true", help="cloudtune embed --isolated (through the model service's worker)")
    args = ap.parse_args()

    import soundfile as sf
    import soxr
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    files = fetch_speech(args.bench_dir)
    cloudtune = str(Path(sys.executable).parent / "cloudtune")
    env = {**os.environ, "CLOUDTUNE__WAV2VEC2__DTYPE": "float32"}  # parity with transformers' float32, to 1e-5
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            model_dir = str(Path(tmp) / "wav2vec2-base-random")
            torch.manual_seed(0)
            Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(model_dir)
            Wav2Vec2FeatureExtractor().save_pretrained(model_dir)
        fe = Wav2Vec2FeatureExtractor.from_pretrained(model_dir)
        model = Wav2Vec2Model.from_pretrained(model_dir).eval()
        print(f"model: {args.model or 'random wav2vec2-base (no real weights here)'}; {len(files)} speech clips from alsa-utils")
        vectors, ok = [], True
        for path in files:
            wave, sr = sf.read(path, dtype="float32", always_2d=True)
            wave = wave.mean(axis=1)
            request = json.dumps({"audio": {"array": wave.astype(float).tolist(), "sampling_rate": sr}})
            t0 = time.perf_counter()
            done = subprocess.run([cloudtune, "embed", "--model", model_dir, *(["--isolated"] if args.isolated else [])], input=request,
                                  capture_output=True, text=True, env=env, timeout=300)
            took = time.perf_counter() - t0
            lines = done.stdout.splitlines()
            vector = np.asarray(json.loads(lines[0])["embedding"]) if done.returncode == 0 and len(lines) == 1 else None
            with torch.inference_mode():
                at16k = soxr.resample(wave, sr, 16000, quality="HQ").astype(np.float32)
                direct = model(**fe(at16k, sampling_rate=16000, return_tensors="pt")).last_hidden_state.mean(dim=1)[0].numpy()
            good = (vector is not None and vector.shape == (model.config.hidden_size,) and bool(np.isfinite(vector).all())
                    and bool(np.allclose(vector, direct, rtol=1e-4, atol=1e-5)))
            ok &= good
            gap = float(np.abs(vector - direct).max()) if vector is not None else float("nan")
            print(f"{path.stem:12s} {len(wave) / sr:4.2f} s at {sr} Hz: exit {done.returncode}, {len(lines)} stdout line(s), "
                  f"{'dim ' + str(vector.shape[0]) if vector is not None else 'no vector'}, max |cli - transformers| {gap:.1e}, "
                  f"{took:.1f} s (process start + model load + clip) {'OK' if good else 'FAILED: ' + done.stderr.strip()[-300:]}")
            if vector is not None:
                vectors.append(vector / np.linalg.norm(vector))
        if args.model and len(vectors) == len(files):
            sims = np.stack(vectors) @ np.stack(vectors).T
            print("cosine similarity:\n" + "\n".join(f"{p.stem:12s} " + " ".join(f"{x:5.2f}" for x in row) for p, row in zip(files, sims, strict=True)))
    print(f"RESULT the JSON contract held on {sum(1 for _ in vectors)}/{len(files)} real speech clips" + ("" if ok else " (FAILED)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
