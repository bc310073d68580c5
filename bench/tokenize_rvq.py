"""rvq codec training time and tokenize throughput on the bench music; prints the figures.

    .venv/bin/python bench/tokenize_rvq.py [--device cpu|cuda] [--demo-tracks 48]

Uses the Debian bench music (fetched by bench/ingest.py into var/bench/music) plus --demo-tracks
synthetic 30 s tracks, so the codec trains on about 2 h of audio. Everything happens in a fresh
CLOUDTUNE_HOME (var/bench/tok_home) with a SQLite metrics DB. Tokenize throughput includes reading
(decoding) the canonical FLAC, log-mel, quantization and writing the token files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench-dir", type=Path, default=ROOT / "var" / "bench")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--demo-tracks", type=int, default=48)
    args = ap.parse_args()

    from ingest import fetch_music  # bench/ingest.py (this folder is on sys.path)

    music = fetch_music(args.bench_dir)
    home = args.bench_dir / "tok_home"
    shutil.rmtree(home, ignore_errors=True)
    os.environ["CLOUDTUNE_HOME"] = str(home)
    os.environ.pop("CLOUDTUNE_DB_URL", None)

    from pipeline.audio.synth import build_catalog
    from pipeline.steps.ingest import ingest
    from pipeline.steps.tokens import tokenize, train_tokenizer

    sources = [music]
    if args.demo_tracks:
        sources.append(build_catalog(args.bench_dir / "demo48", tracks=args.demo_tracks, seconds=30, seed=0, workers=2,
                                           sample_rate=44100, channels=2, shared_motif_ratio=0.5))
    print(ingest(sources, catalog="bench", workers=2).line())
    folder, report = train_tokenizer("bench")
    snr = " ".join(f"{v:.2f}" for v in report["mel_snr_db_by_level"])
    print(f"RESULT rvq training: {report['train_hours']:.2f} h ({report['train_frames']} frames, {report['train_tracks']} tracks) "
          f"in {report['train_seconds']:.1f} s; mel SNR dB by levels 1..{len(report['mel_snr_db_by_level'])} on "
          f"{report['holdout_tracks']} held-out tracks: {snr}")
    first = tokenize("rvq", "bench", device=args.device)
    print(first.line())
    again = tokenize("rvq", "bench", device=args.device)
    print(f"RESULT rvq tokenize ({args.device}): {first.audio_seconds / 3600:.2f} h in {first.wall_seconds:.1f} s = "
          f"{first.realtime_factor:.0f}x realtime (FLAC decode included), {first.files} files; re-run wrote {again.written}")
    rising = all(b > a for a, b in zip(report["mel_snr_db_by_level"], report["mel_snr_db_by_level"][1:], strict=False))
    ok = rising and first.failed == 0 and again.written == 0
    print("bench: OK" if ok else "bench: FAILED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
