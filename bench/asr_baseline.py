"""The PocketSphinx baseline on real recorded speech with known transcripts, and its memory over many files in one process.

    .venv/bin/python bench/asr_baseline.py                 # WER/CER, per-source WER, mean RTF (the `cloudtune asr eval` step)
    .venv/bin/python bench/asr_baseline.py --files 1000    # RSS while transcribing 1000 files in a row in one process
    .venv/bin/python bench/asr_baseline.py --files 1000 --backend qwen3-asr   # the same with configs/asr.yaml's qwen3_asr
                                                           # (CLOUDTUNE__QWEN3_ASR__MODEL=DIR, __QUANTIZE, __MAX_NEW_TOKENS)

The speech comes from two Debian packages, fetched with `apt-get download` into var/bench/debs and unpacked into
var/bench/asr_speech/ (run `apt-get update` first on a fresh machine):

- **alsa-utils** (GPL-2, per its copyright file): ``/usr/share/sounds/alsa/*.wav``, a human voice saying the speaker channel
  names, 48 kHz 16-bit mono. The transcript is the file name (``Front_Left.wav`` -> "front left"); ``Noise.wav`` is not speech
  and is skipped. 8 clips.
- **ktuberling-data** (GPL-2+ for these files, per its copyright file: ``Files: *``, KDE): ``/usr/share/ktuberling/sounds/en/
  *.ogg``, the English words the KDE game says when a piece is placed (one word or two, one speaker per theme). The transcript
  is the sound's name in ``en.soundtheme`` without its theme prefix (``egypt_palmtree`` -> "palm tree"), with the few joined
  or misspelt names written out as words (:data:`SPELLING`). These were not listened to one by one: a name that is not what
  the voice says counts as an error of the recognizer.

The evaluation is the step behind `cloudtune asr eval` (:func:`pipeline.steps.asr.evaluate_asr`, backend pocketsphinx,
configs/asr.yaml as it is) in a bench home, var/bench/asr_home (its own metrics DB and reports), so nothing else is touched.
Printed: corpus WER and CER, WER per source package, mean RTF, files, the commit and the load average.

``--files N``: one transcriber, N files transcribed in a row (the clips cycled) through
:func:`pipeline.asr.transcribe.transcribe_files` in groups of 50, the process's RSS (VmRSS) sampled after every group; printed:
the series and its least-squares slope in MB per 100 files (the goal is flat), over all samples and over the second half.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

PACKAGES = ("alsa-utils", "ktuberling-data")
# ktuberling sound names whose words are joined or misspelt in the name (after the theme prefix is cut)
SPELLING = {"palmtree": "palm tree", "fallingstar": "falling star", "moonwalker": "moon walker", "brocolli": "broccoli", "broccolli": "broccoli",
            "sphynx": "sphinx"}
SAMPLE_EVERY = 50


def fetch_speech(bench_dir: Path) -> Path:
    from ingest import fetch_debs  # bench/ingest.py

    speech = bench_dir / "asr_speech"
    if not (list(speech.rglob("Front_Left.wav")) and list(speech.rglob("en.soundtheme"))):
        fetch_debs(bench_dir, PACKAGES, speech)
    return speech


def ktuberling_text(name: str) -> str:
    word = name.split("_", 1)[-1]  # egypt_camel -> camel: the theme's prefix
    return SPELLING.get(word, word)


def corpus(speech: Path) -> list[tuple[Path, str, str]]:
    """(audio, reference, source package) for every clip."""
    rows = []
    for wav in sorted((speech / "alsa-utils").rglob("*.wav")):
        if wav.stem != "Noise":
            rows.append((wav, wav.stem.replace("_", " ").lower(), "alsa-utils"))
    theme = next((speech / "ktuberling-data").rglob("en.soundtheme"))
    for sound in ET.parse(theme).getroot().iter("sound"):
        audio = theme.parent / sound.get("file")
        if audio.is_file():
            rows.append((audio, ktuberling_text(sound.get("name")), "ktuberling-data"))
    return rows


def write_manifest(rows: list[tuple[Path, str, str]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{audio}\t{text}\tEnglish\n" for audio, text, _ in rows), encoding="utf-8")
    return path


def git_commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return head + ("+dirty" if dirty else "")


def evaluate(rows: list[tuple[Path, str, str]], home: Path) -> None:
    from pipeline.steps.asr import evaluate_asr

    manifest = write_manifest(rows, home / "manifests" / "speech.tsv")
    t0 = time.perf_counter()
    result = evaluate_asr(manifest, backend="pocketsphinx", run_id="baseline")
    wall = time.perf_counter() - t0
    source_of = {str(audio.resolve()): source for audio, _, source in rows}
    with sqlite3.connect(home / "cloudtune.db") as conn:
        db_rows = conn.execute("SELECT source_uri, word_edits, ref_words, char_edits, ref_chars, text, reference FROM asr_results "
                               "WHERE run_id = 'baseline' AND error IS NULL").fetchall()
    by_source: dict[str, list[int]] = {}
    for uri, w_edits, w_ref, _, _, _, _ in db_rows:
        acc = by_source.setdefault(source_of.get(uri, "?"), [0, 0, 0])
        acc[0] += w_edits
        acc[1] += w_ref
        acc[2] += 1
    print(f"files {result['files']} ({result['errors']} failed), {result['audio_hours'] * 3600:.1f} s of audio, {wall:.1f} s wall")
    print(f"corpus WER {result['wer']:.4f}  CER {result['cer']:.4f}  mean RTF {result['mean_rtf']:.4f}")
    for source, (edits, ref, n) in sorted(by_source.items()):
        print(f"  {source}: {n} files, WER {edits / ref:.4f} ({edits} edits / {ref} words)")
    exact = sum(1 for r in db_rows if re.sub(r"\W+", " ", (r[5] or "").lower()).strip() == re.sub(r"\W+", " ", r[6].lower()).strip())
    print(f"exactly right: {exact}/{len(db_rows)}; report {result['report']}")


def rss_run(rows: list[tuple[Path, str, str]], n: int, backend: str) -> None:
    import numpy as np

    from pipeline import config
    from pipeline.asr.registry import get_transcriber
    from pipeline.asr.transcribe import transcribe_files

    def rss_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    cfg = config.load_asr()
    transcriber = get_transcriber(backend, cfg)
    clips = [audio for audio, _, _ in rows]
    done, errors, samples = 0, 0, [(0, rss_mb())]
    t0 = time.perf_counter()
    while done < n:
        group = [clips[(done + i) % len(clips)] for i in range(min(SAMPLE_EVERY, n - done))]
        errors += sum(r.error is not None for r in transcribe_files(transcriber, group, cfg.asr))
        done += len(group)
        samples.append((done, rss_mb()))
    wall = time.perf_counter() - t0
    x = np.array([s[0] for s in samples], float)
    y = np.array([s[1] for s in samples], float)
    slope = np.polyfit(x, y, 1)[0] * 100
    half = x >= x[-1] / 2
    slope_half = np.polyfit(x[half], y[half], 1)[0] * 100 if half.sum() >= 2 else float("nan")
    print(f"{done} files ({errors} failed) in {wall:.1f} s, one process; RSS MB every {SAMPLE_EVERY} files:")
    print(" ".join(f"{v:.1f}" for v in y))
    print(f"RSS {y[0]:.1f} MB before the first file, {y[1]:.1f} after {int(x[1])}, {y[-1]:.1f} after {done}; "
          f"slope {slope:+.3f} MB per 100 files (all samples), {slope_half:+.3f} (second half)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench-dir", type=Path, default=ROOT / "var" / "bench")
    ap.add_argument("--files", type=int, nargs="?", const=1000, help="the RSS run: N files in a row in one process (default 1000)")
    ap.add_argument("--backend", default="pocketsphinx", choices=("pocketsphinx", "qwen3-asr"), help="the RSS run's backend")
    args = ap.parse_args()
    rows = corpus(fetch_speech(args.bench_dir))
    home = args.bench_dir / "asr_home"
    if args.files is None:
        shutil.rmtree(home, ignore_errors=True)
    os.environ["CLOUDTUNE_HOME"] = str(home)
    os.environ.pop("CLOUDTUNE_DB_URL", None)
    print(f"# asr baseline ({args.backend if args.files else 'pocketsphinx'}), commit {git_commit()}, load average {os.getloadavg()[0]:.2f}, {len(rows)} clips "
          f"({', '.join(f'{sum(r[2] == p for r in rows)} {p}' for p in PACKAGES)})", flush=True)
    if args.files is None:
        evaluate(rows, home)
    else:
        rss_run(rows, args.files, args.backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
