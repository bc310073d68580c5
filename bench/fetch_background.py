"""Fetch real recorded background sound from Debian packages into var/background/: an evaluation pool and a training pool.

    apt-get update          # once: `apt-get download` needs Debian's package index
    .venv/bin/python bench/fetch_background.py [--out var/background] [--package NAME ...] [--clip-seconds 30]

For each package of SOURCES: `apt-get download` its .deb into <out>/debs/ (kept: a rerun downloads nothing), `dpkg-deb -x` it into
<out>/src/<package>/, take the files SOURCES names there (recordings of places and things: forests, rain, wind, water, fire, a city
street, a crowd, a factory, engines, aircraft; never the packages' music or synthesized effects), check the licence SOURCES gives
against the package's /usr/share/doc/<package>/copyright (the paragraph that names the file, in a machine-readable one), and write
each recording as mono 24 kHz FLAC clips of at most --clip-seconds (a longer one is cut into equal parts) into <out>/eval/ or
<out>/train/. Recordings shorter than --min-seconds (5 s) are left out, none is looped. The pool is picked by a stable hash of the
package and the file's path in it, so the same recording always lands in the same pool and the two never share one; a recording
whose decoded audio another already has (MegaGlest ships some in several tilesets) is kept once. Each clip is scaled to -23 dBFS
RMS (peaks at most -1 dBFS): the degradation sets its own level from the SNR.

Writes <out>/manifest.csv (file, package, original_path, licence, seconds, pool) and prints minutes per package and pool. The
evaluation reads <out>/eval (configs/eval.yaml queries.background_dir); the fingerprint's training augmentation reads <out>/train
(configs/fingerprint.yaml augment.background_dir), so that no recording is both trained on and evaluated with. README.md names
the packages and licences.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import hashlib
import io
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[1]
SR = 24000
TARGET_RMS, PEAK = 10 ** (-23 / 20), 10 ** (-1 / 20)


@dataclass(frozen=True)
class Source:
    """Files of one Debian package under one licence. ``files``: glob patterns relative to the unpacked package; a member of a
    zip archive in it (UFO:AI's .pk3) is ``<archive>!<pattern>``. ``licence``: as the package's copyright file names it; the
    check finds it in the DEP-5 paragraph that covers the file (``upstream`` maps the installed path to the path that copyright
    file uses) or, in a free-form copyright file, finds ``evidence`` there."""

    package: str
    content: str
    licence: str
    files: tuple[str, ...]
    upstream: tuple[str, str] = ("", "")  # (installed prefix, upstream prefix)
    evidence: str = ""


TILESETS = "usr/share/games/megaglest/tilesets/*/sounds/"
UFO_PK3 = "usr/share/games/ufoai/base/0snd.pk3!sound/ambience/"
SCORCHED = "usr/share/games/scorched3d/data/globalmods/"
SOURCES = [
    Source("megaglest-data", "forest, jungle, meadow and desert ambience by day and by night (birds, insects, frogs), rain, wind",
           "CC-BY-SA-3.0", tuple(TILESETS + f for f in ("day.ogg", "night.ogg", "nightime.ogg", "sunny_day.ogg", "desertday.ogg", "rain.ogg",
                                                        "rain.wav", "wind.ogg"))),
    Source("ufoai-sound", "arctic wind, fire, thunder, running water, a fountain, a wind turbine, a TV news broadcast, a sandy town",
           "CC-BY-SA-3.0", tuple(UFO_PK3 + f for f in ("arcticwind.ogg", "fire.ogg", "smallfire.ogg", "thunder1.ogg", "thunder2.ogg",
                                                       "thunder3.ogg", "water01.ogg", "waterfontain.ogg", "wind_turbine.ogg", "tv_newswav.ogg",
                                                       "sand-city.ogg")),
           upstream=("usr/share/games/ufoai/base/0snd.pk3!", "base/")),
    Source("ufoai-sound", "an abandoned city and a night outdoors (ambience loops), machine hum", "GPL-2+",
           tuple(UFO_PK3 + f for f in ("city_abnd_ufoai_atm.ogg", "ufo_night_atm.ogg", "hum2.ogg", "machine1.ogg")),
           upstream=("usr/share/games/ufoai/base/0snd.pk3!", "base/")),
    Source("ufoai-sound", "a mine pump", "CC-BY-3.0", (UFO_PK3 + "minepump03.ogg",), upstream=("usr/share/games/ufoai/base/0snd.pk3!", "base/")),
    Source("scorched3d-data", "birds, frogs, ocean waves, rain, a jet, a tank engine (11 kHz recordings: nothing above 5.5 kHz)", "GPL-2+",
           tuple(SCORCHED + "none/data/wav/" + f for f in ("misc/birds1.wav", "misc/birds2.wav", "misc/frogs.wav", "misc/oceanwaves.wav",
                                                          "misc/rain.wav", "misc/jet.wav", "movement/tankmove.wav")),
           upstream=("usr/share/games/scorched3d/", "")),
    Source("scorched3d-data", "a cheering crowd, a city street, a factory, a light aircraft, a helicopter (11 kHz)", "CC-BY-SA-3",
           tuple(SCORCHED + "apoc/data/wav/misc/" + f for f in ("cheeringloop.wav", "citysounds.wav", "factoryloop1.wav", "cessna.wav",
                                                                "helicopter.wav")),
           upstream=("usr/share/games/scorched3d/", "")),
    Source("lugaru-data", "desert ambience, wind", "CC-BY-SA-3.0",
           ("usr/share/games/lugaru/Sounds/DesertAmbient.ogg", "usr/share/games/lugaru/Sounds/Wind.ogg"), upstream=("usr/share/games/lugaru/", "Data/")),
    Source("wesnoth-1.16-data", "a campfire, a ship at sea, night insects, birds", "GPL-2+",
           tuple("usr/share/games/wesnoth/1.16/data/core/sounds/ambient/" + f for f in ("campfire.ogg", "ship.ogg", "night.ogg", "birds2.ogg",
                                                                                      "birds3.ogg")),
           evidence="GNU General Public License version 2 or at your option any later version"),
]


def run(cmd: list[str], cwd: Path | None = None) -> None:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"fetch_background: {' '.join(cmd)} failed: {(p.stderr or p.stdout).strip().splitlines()[-1:]}"
                         + (" (run `apt-get update` first)" if cmd[0] == "apt-get" else ""))


def unpack(package: str, out: Path) -> Path:
    """The package downloaded (once) into out/debs and unpacked (once) into out/src/<package>; its folder."""
    debs, dest = out / "debs", out / "src" / package
    debs.mkdir(parents=True, exist_ok=True)
    if not list(debs.glob(f"{package}_*.deb")):
        print(f"fetch_background: apt-get download {package}", file=sys.stderr)
        run(["apt-get", "download", package], cwd=debs)
    if not (dest / ".unpacked").exists():
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        run(["dpkg-deb", "-x", str(sorted(debs.glob(f"{package}_*.deb"))[-1]), str(dest)])
        (dest / ".unpacked").touch()
    return dest


def files_of(source: Source, tree: Path) -> list[tuple[str, bytes]]:
    """(path in the package, file bytes) of every file the source names, sorted by path."""
    found = {}
    for pattern in source.files:
        if "!" in pattern:
            archive, member = pattern.split("!", 1)
            with zipfile.ZipFile(tree / archive) as z:
                for name in fnmatch.filter(z.namelist(), member):
                    found[f"{archive}!{name}"] = z.read(name)
        else:
            for path in tree.glob(pattern):
                found[str(path.relative_to(tree))] = path.read_bytes()
    return sorted(found.items())


def copyright_text(package: str, tree: Path) -> str:
    return (tree / "usr/share/doc" / package / "copyright").read_text(errors="replace")


def dep5_licence(text: str, path: str) -> str | None:
    """The licence of ``path`` (upstream-relative) in a machine-readable (DEP-5) copyright file: the last Files paragraph whose
    patterns match it; None for a free-form file."""
    if not text.startswith("Format:"):
        return None
    licence = None
    for para in re.split(r"\n\s*\n", text):
        if not para.startswith("Files:"):
            continue
        patterns = re.match(r"Files:((?:.*\n?)(?:[ \t].*\n?)*)", para).group(1).split()
        match = re.search(r"^License: *(\S+)", para, re.M)
        if match and any(fnmatch.fnmatchcase(path, p) for p in patterns):
            licence = match.group(1)
    return licence


def check_licence(source: Source, text: str, path: str) -> None:
    installed, upstream = source.upstream
    found = dep5_licence(text, upstream + path.removeprefix(installed) if path.startswith(installed) else path)
    if found is None:
        if " ".join((source.evidence or f"License: {source.licence}").split()) not in " ".join(text.split()):
            raise SystemExit(f"fetch_background: {source.package} {path}: its copyright file does not say {source.evidence or source.licence!r}")
    elif found != source.licence:
        raise SystemExit(f"fetch_background: {source.package} {path}: its copyright file says {found}, not {source.licence}")


def pool_of(package: str, path: str) -> str:
    """eval or train, by a stable hash of the package and the file's path in it (about half the files each)."""
    return "eval" if hashlib.sha256(f"{package}/{path}".encode()).digest()[0] < 128 else "train"


def decode(data: bytes) -> np.ndarray:
    """Mono float32 at 24 kHz, scaled to -23 dBFS RMS with peaks at most -1 dBFS."""
    wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    mono = wave.mean(axis=1)
    if rate != SR:
        mono = soxr.resample(mono, rate, SR, quality="HQ")
    rms, peak = float(np.sqrt(np.mean(mono.astype(np.float64) ** 2))), float(np.max(np.abs(mono), initial=0))
    return (mono * min(TARGET_RMS / max(rms, 1e-9), PEAK / max(peak, 1e-9))).astype(np.float32)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "var" / "background")
    ap.add_argument("--package", action="append", help="only these packages (default: all of SOURCES)")
    ap.add_argument("--clip-seconds", type=float, default=30.0, help="longest clip; a longer recording is cut into equal parts")
    ap.add_argument("--min-seconds", type=float, default=5.0, help="shorter recordings are left out")
    args = ap.parse_args()
    out = args.out
    sources = [s for s in SOURCES if not args.package or s.package in args.package]
    for pool in ("eval", "train"):
        shutil.rmtree(out / pool, ignore_errors=True)
        (out / pool).mkdir(parents=True)
    rows, seen, left_out = [], {}, []
    for source in sources:
        tree = unpack(source.package, out)
        text = copyright_text(source.package, tree)
        chosen = files_of(source, tree)
        if not chosen:
            raise SystemExit(f"fetch_background: {source.package}: none of {', '.join(source.files)} is in the package")
        for path, data in chosen:
            check_licence(source, text, path)
            wave = decode(data)
            seconds = len(wave) / SR
            digest = hashlib.sha256(np.round(wave * 32767).astype(np.int16).tobytes()).hexdigest()
            if digest in seen:
                left_out.append(f"{source.package} {path}: the same audio as {seen[digest]}")
                continue
            seen[digest] = f"{source.package} {path}"
            if seconds < args.min_seconds:
                left_out.append(f"{source.package} {path}: {seconds:.2f} s, under {args.min_seconds:g} s")
                continue
            pool = pool_of(source.package, path)
            parts = int(np.ceil(seconds / args.clip_seconds))
            for k, piece in enumerate(np.array_split(wave, parts)):
                name = f"{source.package}__{slug(path.split('/', 3)[-1].rsplit('.', 1)[0])}__{k:02d}.flac"
                sf.write(out / pool / name, piece, SR, subtype="PCM_16")
                rows.append({"file": f"{pool}/{name}", "package": source.package, "original_path": path, "licence": source.licence,
                             "seconds": round(len(piece) / SR, 2), "pool": pool})
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "package", "original_path", "licence", "seconds", "pool"])
        w.writeheader()
        w.writerows(rows)
    for line in left_out:
        print(f"left out: {line}")
    print(f"\n{'package':20s} {'licence':14s} {'files':>5s} {'eval min':>9s} {'train min':>9s}")
    for package in dict.fromkeys(r["package"] for r in rows):
        for licence in dict.fromkeys(r["licence"] for r in rows if r["package"] == package):
            mine = [r for r in rows if r["package"] == package and r["licence"] == licence]
            minutes = {p: sum(r["seconds"] for r in mine if r["pool"] == p) / 60 for p in ("eval", "train")}
            print(f"{package:20s} {licence:14s} {len({r['original_path'] for r in mine}):5d} {minutes['eval']:9.1f} {minutes['train']:9.1f}")
    totals = {p: sum(r["seconds"] for r in rows if r["pool"] == p) / 60 for p in ("eval", "train")}
    files = {p: len({(r["package"], r["original_path"]) for r in rows if r["pool"] == p}) for p in ("eval", "train")}
    print(f"{'total':35s} {files['eval'] + files['train']:5d} {totals['eval']:9.1f} {totals['train']:9.1f}")
    print(f"\nfetch_background: {len(rows)} clips -> {out / 'eval'} ({files['eval']} recordings, {totals['eval']:.1f} min) and {out / 'train'} "
          f"({files['train']} recordings, {totals['train']:.1f} min); manifest {out / 'manifest.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
